"""The chaos report: tickets by outcome, faults by kind with time to recover, duplicates absorbed,
dead letters, and the checker's verdict; printed and written as JSON."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Report:
    data: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.data["ok"])

    @property
    def violations(self) -> dict[str, list[str]]:
        return dict(self.data["violations"])

    @classmethod
    def build(
        cls,
        config: Any,
        published: dict[str, Any],
        injected: list[Any],
        recorded: Any,
        checked: Any,
        load_s: float,
        total_s: float,
        restarts: dict[str, int],
    ) -> Report:
        by_kind: dict[str, list[Any]] = defaultdict(list)
        for fault in injected:
            by_kind[fault.kind].append(fault)

        def spread(values: list[float | None]) -> dict[str, Any]:
            known = [v for v in values if v is not None]
            if not known:
                return {"n": 0, "never": len(values)}
            return {
                "n": len(known),
                "median_s": round(statistics.median(known), 2),
                "max_s": round(max(known), 2),
                "never": len(values) - len(known),
            }

        return cls(
            {
                "ok": checked.ok,
                "config": {k: v for k, v in asdict(config).items() if k != "kinds"},
                "tickets": {
                    "published": len(published),
                    "by_outcome": dict(checked.outcomes),
                    "as_expected": checked.as_expected,
                    "needed": checked.needed,
                },
                "faults": {
                    "total": len(injected),
                    "by_kind": {
                        kind: {
                            "count": len(fs),
                            "targets": dict(Counter(f.target for f in fs)),
                            "ready": spread([f.ready_s for f in fs]),
                            "recover": spread([f.recovered_s for f in fs]),
                        }
                        for kind, fs in sorted(by_kind.items())
                    },
                    "each": [
                        {
                            "kind": f.kind,
                            "target": f.target,
                            "at_s": round(f.started - injected[0].started, 1) if injected else 0,
                            "held_s": round(f.healed - f.started, 2),
                            "ready_s": None if f.ready_s is None else round(f.ready_s, 2),
                            "recover_s": None if f.recovered_s is None else round(f.recovered_s, 2),
                            "detail": f.detail,
                        }
                        for f in injected
                    ],
                },
                # Every restart the supervisor made: the harness's kills, and crashes of the services'
                # own (the executor's crash hook, a service that died of a fault).
                "restarts": restarts,
                "own_crashes": {
                    name: n - kills
                    for name, n in restarts.items()
                    if (kills := sum(1 for f in injected if f.kind == "kill" and f.target == name)) < n
                },
                "duplicates_absorbed": checked.duplicates,
                "dead_lettered": {"total": sum(checked.dead_letters.values()), **dict(checked.dead_letters)},
                "history": {
                    "records": len(recorded.records),
                    "audit_rows": recorded.audit_rows,
                    "ledger_keys": len(recorded.ledger),
                    "chain_ok": recorded.chain_ok,
                },
                "violations": {k: v for k, v in checked.violations.items() if v},
                "seconds": {"load_and_drain": round(load_s, 1), "total": round(total_s, 1)},
            }
        )

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))

    def render(self) -> str:
        d = self.data
        t, f = d["tickets"], d["faults"]
        lines = [
            f"chaos run: {'PASS' if d['ok'] else 'FAIL'}  "
            f"({d['seconds']['total']}s, load+drain {d['seconds']['load_and_drain']}s)",
            f"tickets: {t['published']} published; "
            + ", ".join(f"{k} {v}" for k, v in sorted(t["by_outcome"].items()))
            + f"; {t['as_expected']} as expected (need {t['needed']})",
            f"faults: {f['total']} injected",
        ]
        for kind, s in f["by_kind"].items():
            ready = s["ready"]
            rec = s["recover"]
            lines.append(
                f"  {kind:<12} x{s['count']:<3} "
                + (f"ready median {ready['median_s']}s max {ready['max_s']}s; " if ready["n"] else "")
                + (
                    f"next ticket finished after median {rec['median_s']}s max {rec['max_s']}s"
                    if rec["n"]
                    else "no ticket finished after it"
                )
                + (f" (never for {rec['never']})" if rec["n"] and rec["never"] else "")
            )
        lines.append(f"restarts by the supervisor: {d['restarts'] or 'none'}")
        if d["own_crashes"]:
            lines.append(f"  of which not the harness's kills: {d['own_crashes']}")
        dup = d["duplicates_absorbed"]
        lines.append(
            "duplicates absorbed: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dup.items())
        )
        dl = d["dead_lettered"]
        lines.append(f"dead-lettered: {dl['total']} " + str({k: v for k, v in dl.items() if k != "total"}))
        h = d["history"]
        lines.append(
            f"history: {h['records']} records on the topics, {h['audit_rows']} events in the audit store "
            f"(chain {'verifies' if h['chain_ok'] else 'BROKEN'}), {h['ledger_keys']} idempotency keys"
        )
        for check, messages in d["violations"].items():
            lines.append(f"VIOLATION {check}: {len(messages)}")
            lines += [f"  {m}" for m in messages[:10]]
            if len(messages) > 10:
                lines.append(f"  … and {len(messages) - 10} more")
        return "\n".join(lines)
