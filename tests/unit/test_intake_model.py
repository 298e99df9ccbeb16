"""Intake with PII protection and a model-assisted classification that falls back to the rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import builders
import pytest
from agentbus.intake import rules
from agentbus.intake.classifier import ModelClassifier, ModelHint
from agentbus.intake.handlers import protect_ticket
from agentbus.shared.llm import Completion, ModelsConfig, ModelUnavailable
from agentbus.shared.pii import Protected, find, replace
from fakes import ScriptedClient

REPO = Path(__file__).resolve().parents[2]
CONFIG = ModelsConfig.model_validate(
    {
        "endpoints": {"local": {"base_url": "http://127.0.0.1:9/v1"}},
        "prices": {"small": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}},
        "intake": {"endpoint": "local", "model": "small"},
    }
)


class KindVault:
    """Replaces each detected value by `<kind>` and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    async def protect(self, tenant_id: str, subject_id: str, texts: Mapping[str, str]) -> Protected:
        self.seen.append((tenant_id, subject_id, dict(texts)))
        out = {k: replace(v, find(v), lambda s: f"<{s.kind}>") for k, v in texts.items()}
        kinds = sorted({s.kind for v in texts.values() for s in find(v)})
        return Protected(out, [(f"<{k}>", k) for k in kinds])


async def test_every_text_field_of_the_ticket_is_protected() -> None:
    ticket = builders.ticket(
        subject="Refund to jane@example.org",
        body="Card 4111 1111 1111 1111, call +1 415-555-0132.",
        customer={"id": "C-9", "email": "jane@example.org"},
        metadata={"callback": {"phones": ["+44 20 7946 0958"]}, "count": 2},
    )
    vault = KindVault()
    safe, refs = await protect_ticket(vault, ticket)
    assert vault.seen[0][:2] == ("acme", "C-9")  # the customer is the data subject
    assert safe.subject == "Refund to <email>"
    assert safe.body == "Card <card>, call <phone>."
    assert safe.customer.email == "<email>"
    assert safe.metadata == {"callback": {"phones": ["<phone>"]}, "count": 2}
    assert sorted(r.kind for r in refs) == ["card", "email", "phone"]


def completion(args: str | None) -> Completion:
    calls = [] if args is None else [("c1", "classify_ticket", args)]
    return Completion({"role": "assistant"}, None, calls, prompt_tokens=200, completion_tokens=20)


async def classify(reply: object) -> tuple[ModelHint | None, str, int]:
    client = ScriptedClient([reply])
    result = await ModelClassifier(CONFIG, REPO / "prompts", client=client).classify(builders.ticket())  # type: ignore[arg-type]
    cost = result.call.usage.cost_microdollars if result.call else -1
    return result.hint, result.reason, cost


async def test_a_valid_model_classification_is_used_and_costed() -> None:
    hint, reason, cost = await classify(
        completion('{"intent": "refund_request", "language": "de", "risk_tier": "low"}')
    )
    assert hint == ModelHint(intent="refund_request", language="de", risk_tier="low")
    assert reason == "intake.model.classified" and cost == 240  # 200 * 1 + 20 * 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (completion('{"intent": "wire_money", "language": "en", "risk_tier": "low"}'), "invalid"),
        (completion("{not json"), "invalid"),
        (completion(None), "no_classification"),
        (ModelUnavailable("timeout", "slow"), "timeout"),
    ],
    ids=["unknown_intent", "not_json", "no_call", "timeout"],
)
async def test_unusable_model_output_falls_back_to_the_rules(reply: object, reason: str) -> None:
    hint, got, _ = await classify(reply)
    assert hint is None and got == f"intake.model.fallback.{reason}"


def test_a_hint_sets_intent_and_language_but_eligibility_stays_with_the_rules() -> None:
    question = builders.ticket(subject="Hello", body="Where is my parcel?", order_id=None)
    task = rules.classify(question, hint=ModelHint(intent="refund_request", language="fr", risk_tier="low"))
    assert (task.intent, task.workflow, task.language) == ("refund_request", "refunds", "fr")
    assert not task.eligible and "intake.refunds.missing_order_id" in task.reasons


def test_a_hint_can_raise_the_risk_tier_but_never_lower_it() -> None:
    legal = builders.ticket(body="Refund ORD-1001 or my lawyer will call.")
    lowered = rules.classify(legal, hint=ModelHint(intent="refund_request", language="en", risk_tier="low"))
    assert lowered.risk_tier == "high"
    plain = builders.ticket()
    raised = rules.classify(plain, hint=ModelHint(intent="refund_request", language="en", risk_tier="high"))
    assert raised.risk_tier == "high" and "intake.risk.model" in raised.reasons
