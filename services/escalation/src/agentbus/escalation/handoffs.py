"""Handoff content for humans: the approval preview (the exact change) and handoff ids."""

from __future__ import annotations

import hashlib

from agentbus.shared.events import Proposal


def handoff_id(ticket_id: str, reason: str) -> str:
    return "H-" + hashlib.sha256(f"{ticket_id}|{reason}".encode()).hexdigest()[:10].upper()


def approval_id(action_id: str) -> str:
    return "AP-" + hashlib.sha256(action_id.encode()).hexdigest()[:10].upper()


def preview(proposal: Proposal) -> str:
    """A diff-like description of what will change if the action is approved."""
    lines = [f"{proposal.tool} as {proposal.agent} (key {proposal.idempotency_key})"]
    for name, value in sorted(proposal.args.items()):
        lines.append(f"+ {name} = {value!r}")
    if proposal.rationale:
        lines.append(f"# why: {proposal.rationale}")
    return "\n".join(lines)
