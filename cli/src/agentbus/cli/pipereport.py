"""The figures `agentbus bench` prints: pipeline and relay side by side, their ratios, per-stage
latency, the trace sink, memory and CPU per process, each beside its DESIGN §8 target."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from agentbus.shared.kpis import percentile

# DESIGN §8.
THROUGHPUT_RATIO_MIN = 0.5  # pipeline throughput ≥ 0.5 x the relay's
P95_RATIO_MAX = 1.5  # pipeline p95 at a fixed load ≤ 1.5 x the relay's
SINK_LAG_MAX_S = 1.0  # the trace sink keeps up: lag < 1 s
SINK_RATE_MIN = 20_000.0  # and persists ≥ 20k events/s
RSS_MAX_MB = 150.0  # peak RSS per service process


@dataclass(frozen=True)
class Latency:
    """Seconds; None where there were no samples."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        ordered = sorted(values)
        return cls(
            len(ordered),
            percentile(ordered, 0.50),
            percentile(ordered, 0.95),
            percentile(ordered, 0.99),
            ordered[-1] if ordered else None,
        )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Target:
    """A figure and its bound: `value` must be ≥ bound (at_least) or ≤ / < it."""

    name: str
    value: float | None
    bound: float
    at_least: bool
    strict: bool = False  # < rather than ≤

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        if self.at_least:
            return self.value >= self.bound
        return self.value < self.bound if self.strict else self.value <= self.bound

    @property
    def verdict(self) -> str:
        return {True: "meets", False: "MISSES", None: "n/a"}[self.ok]

    def bound_text(self, unit: str = "") -> str:
        sign = "≥" if self.at_least else ("<" if self.strict else "≤")
        return f"{sign} {self.bound:g}{unit}"


@dataclass
class Side:
    """One side (pipeline or relay): its max-rate and fixed-rate phases."""

    tickets: int
    completed_max: int
    throughput: float  # tickets/s at max rate
    max_rate: Latency
    offered_rate: float
    completed_fixed: int
    fixed_throughput: float
    fixed_rate: Latency
    max_wall_s: float = 0.0  # how long the max-rate phase took


@dataclass
class Stage:
    cause: str
    effect: str
    service: str
    max_rate: Latency
    fixed_rate: Latency


@dataclass
class Handler:
    """A service's handler of one consumed topic: events, mean seconds each (the handler and its
    publishes: the stage's service time) and the share of the phase it was busy, per phase."""

    service: str
    topic: str
    events_max_rate: int
    mean_max_rate_s: float | None
    busy_max_rate: float | None
    events_fixed_rate: int
    mean_fixed_rate_s: float | None
    busy_fixed_rate: float | None


@dataclass
class Sink:
    lag_max_rate: Latency  # recorded_at - occurred_at of the phase's events
    lag_fixed_rate: Latency
    burst_events: int
    burst_mean_bytes: float
    persisted_per_s: float | None
    drain_s: float | None  # sink ready → backlog persisted
    drain_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU per process meanwhile


@dataclass
class Process:
    name: str
    peak_rss_mb: float | None
    cpu_max_rate_s: float | None = None
    cpu_fixed_rate_s: float | None = None
    service: bool = True  # a service process (the RSS target applies)
    idle_cpu: float | None = None  # share of a core it uses with no load (polling)


@dataclass
class BenchReport:
    tickets: int
    mix: dict[str, int]  # workflow → tickets a phase
    hops: dict[str, int]  # workflow → hops from the topic map
    observed_hops: dict[str, list[int]]  # workflow → distinct steps of task.finished seen
    relay_hops: int
    outcomes: dict[str, int]
    pipeline: Side
    relay: Side
    stages: list[Stage]
    handlers: list[Handler]
    sink: Sink
    processes: list[Process]
    relay_processes: list[Process]  # the hops
    relay_infrastructure: list[Process]  # the broker's CPU while the relay ran
    machine: dict[str, float] = field(default_factory=dict)  # cores, busy shares per phase
    notes: list[str] = field(default_factory=list)

    def targets(self) -> list[Target]:
        lags = [x for x in (self.sink.lag_max_rate.max, self.sink.lag_fixed_rate.max) if x is not None]
        return [
            Target(
                "throughput pipeline/relay",
                ratio(self.pipeline.throughput, self.relay.throughput),
                THROUGHPUT_RATIO_MIN,
                at_least=True,
            ),
            Target(
                "p95 at fixed rate pipeline/relay",
                ratio(self.pipeline.fixed_rate.p95, self.relay.fixed_rate.p95),
                P95_RATIO_MAX,
                at_least=False,
            ),
            Target("trace sink lag (max, s)", max(lags) if lags else None, SINK_LAG_MAX_S, False, True),
            Target("trace sink events/s", self.sink.persisted_per_s, SINK_RATE_MIN, at_least=True),
            *(
                Target(f"peak RSS {p.name} (MB)", p.peak_rss_mb, RSS_MAX_MB, at_least=False)
                for p in self.processes
                if p.service
            ),
        ]

    def shortfalls(self) -> list[Target]:
        return [t for t in self.targets() if t.ok is False]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [{**asdict(t), "ok": t.ok} for t in self.targets()]
        return data

    def render(self) -> list[str]:
        return [
            *self._render_header(),
            "",
            *self._render_sides(),
            "",
            *self._render_stages(),
            "",
            *self._render_handlers(),
            "",
            *self._render_sink(),
            "",
            *self._render_processes(),
            "",
            *self._render_verdict(),
        ]

    def _render_header(self) -> list[str]:
        mix = ", ".join(
            f"{n} {w} ({self.hops[w]} hops; seen {'/'.join(map(str, self.observed_hops.get(w, []))) or '-'})"
            for w, n in self.mix.items()
        )
        lines = [
            f"agentbus bench: {self.tickets} tickets a phase: {mix}",
            f"relay: {self.relay_hops} hop processes (consume → parse → produce → commit) on the same broker;"
            " a ticket of fewer hops enters the chain later",
            "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
        ]
        if self.machine:
            m = self.machine
            lines.append(
                f"machine: {m.get('cores', 0):.0f} cores; busy in the max-rate phases: pipeline "
                f"{pct(m.get('busy_pipeline_max'))} (its own processes {pct(m.get('own_pipeline_max'))}), "
                f"relay {pct(m.get('busy_relay_max'))} (its own {pct(m.get('own_relay_max'))})"
            )
        return lines + self.notes

    def _render_sides(self) -> list[str]:
        p, r = self.pipeline, self.relay
        tput, p95 = self.targets()[:2]
        head = f"{'':30}{'pipeline':>11}{'relay':>11}{'pipeline/relay':>16}   target (DESIGN §8)"

        def row(label: str, a: float | None, b: float | None, scale: float = 1.0, target: str = "") -> str:
            ra = ratio(a, b)
            return (
                f"{label:30}{num(a, scale):>11}{num(b, scale):>11}"
                f"{(f'{ra:.2f}' if ra is not None else '-'):>16}   {target}"
            ).rstrip()

        return [
            head,
            row(
                "max rate: throughput (t/s)",
                p.throughput,
                r.throughput,
                target=f"{tput.bound_text()}  {tput.verdict}",
            ),
            f"{'  completed':30}{p.completed_max:>11}{r.completed_max:>11}",
            row("  e2e p50 (ms)", p.max_rate.p50, r.max_rate.p50, 1000),
            row("  e2e p95 (ms)", p.max_rate.p95, r.max_rate.p95, 1000),
            row("  e2e p99 (ms)", p.max_rate.p99, r.max_rate.p99, 1000),
            row(f"fixed rate {p.offered_rate:g} t/s: throughput", p.fixed_throughput, r.fixed_throughput),
            f"{'  completed':30}{p.completed_fixed:>11}{r.completed_fixed:>11}",
            row("  e2e p50 (ms)", p.fixed_rate.p50, r.fixed_rate.p50, 1000),
            row(
                "  e2e p95 (ms)",
                p.fixed_rate.p95,
                r.fixed_rate.p95,
                1000,
                target=f"{p95.bound_text()}  {p95.verdict}",
            ),
            row("  e2e p99 (ms)", p.fixed_rate.p99, r.fixed_rate.p99, 1000),
        ]

    def _render_stages(self) -> list[str]:
        lines = [
            "pipeline stages, ms from an event to the one it causes (broker + queue + handler):",
            f"  {'service':10}{'cause → effect':40}{'max p50':>9}{'p95':>9}{'fixed p50':>11}{'p95':>9}",
        ]
        for s in self.stages:
            lines.append(
                f"  {s.service:10}{f'{s.cause} → {s.effect}':40}"
                f"{num(s.max_rate.p50, 1000):>9}{num(s.max_rate.p95, 1000):>9}"
                f"{num(s.fixed_rate.p50, 1000):>11}{num(s.fixed_rate.p95, 1000):>9}"
            )
        return lines

    def _render_handlers(self) -> list[str]:
        lines = [
            "stage handlers, each event in turn (agentbus_handler_duration_seconds: handler + publishes):",
            f"  {'service':20}{'topic':22}{'max: events':>12}{'ms each':>9}{'busy':>6}"
            f"{'fixed: ms each':>16}{'busy':>6}",
        ]
        for h in self.handlers:
            lines.append(
                f"  {h.service:20}{short_topic(h.topic):22}{h.events_max_rate:>12}"
                f"{num(h.mean_max_rate_s, 1000):>9}{pct(h.busy_max_rate):>6}"
                f"{num(h.mean_fixed_rate_s, 1000):>16}{pct(h.busy_fixed_rate):>6}"
            )
        return lines if self.handlers else []

    def _render_sink(self) -> list[str]:
        s = self.sink
        lag, rate = self.targets()[2:4]
        sink_cpu = s.drain_cpu_s.get("trace-sink")
        per_event = sink_cpu * 1000 / s.burst_events if sink_cpu is not None else None
        others = ", ".join(f"{name} {num(cpu, 1, 1)} s" for name, cpu in s.drain_cpu_s.items())

        def lags(label: str, x: Latency, target: str = "") -> str:
            figures = f"{num(x.p50, 1000):>9}{num(x.p95, 1000):>9}{num(x.max, 1000):>9}"
            return f"  {label:28}{figures}   {target}".rstrip()

        return [
            "trace sink (lag = recorded_at - occurred_at of each event of the run):",
            f"  {'':28}{'p50':>9}{'p95':>9}{'max':>9}",
            lags("lag at max rate (ms)", s.lag_max_rate, f"target {lag.bound_text(' s')}  {lag.verdict}"),
            lags("lag at fixed rate (ms)", s.lag_fixed_rate),
            f"  persisted {num(s.persisted_per_s)} events/s   target {rate.bound_text()}/s  {rate.verdict}",
            f"    (a backlog of {s.burst_events:,} events of {s.burst_mean_bytes:.0f} B, the run's mean "
            f"size, drained in {num(s.drain_s, 1, 1)} s from ready; sink CPU "
            f"{num(per_event, 1, 2)} ms/event)",
            f"    CPU while draining: {others}",
        ]

    def _render_processes(self) -> list[str]:
        lines = [
            "processes (peak RSS = VmHWM; CPU = user + system; idle = share of a core it uses with no load):",
            f"  {'process':20}{'peak RSS MB':>12}{f'≤ {RSS_MAX_MB:g}':>8}{'idle':>7}{'CPU s max':>11}"
            f"{'ms/ticket':>11}{'CPU s fixed':>13}",
        ]

        def row(p: Process, side: Side) -> str:
            verdict = Target("", p.peak_rss_mb, RSS_MAX_MB, False).verdict if p.service else ""
            per_ticket = cpu_per_ticket([p], side)
            return (
                f"  {p.name:20}{num(p.peak_rss_mb, 1, 1):>12}{verdict:>8}{pct(p.idle_cpu):>7}"
                f"{num(p.cpu_max_rate_s, 1, 1):>11}{num(per_ticket, 1, 1):>11}"
                f"{num(p.cpu_fixed_rate_s, 1, 1):>13}"
            )

        lines += [row(p, self.pipeline) for p in self.processes]
        if self.relay_processes:
            hops = self.relay_processes
            rss = [p.peak_rss_mb for p in hops if p.peak_rss_mb is not None]
            idles = [p.idle_cpu for p in hops if p.idle_cpu is not None]
            agg = Process(
                f"relay hops ({len(hops)})",
                max(rss) if rss else None,
                sum(p.cpu_max_rate_s or 0 for p in hops),
                sum(p.cpu_fixed_rate_s or 0 for p in hops),
                service=False,
                idle_cpu=sum(idles) if idles else None,
            )
            lines.append(row(agg, self.relay) + "   (RSS: the largest hop; the rest: all hops)")
        lines += [row(replace(p, name=f"{p.name}, relay"), self.relay) for p in self.relay_infrastructure]
        relay = self.relay_processes + self.relay_infrastructure

        def idle(processes: list[Process]) -> float:
            return sum(p.idle_cpu or 0.0 for p in processes)

        lines += [
            "  CPU per ticket at max rate, broker and Postgres included: pipeline "
            f"{num(cpu_per_ticket(self.processes, self.pipeline), 1, 1)} ms, relay "
            f"{num(cpu_per_ticket(relay, self.relay), 1, 1)} ms",
            f"  with no load the pipeline's processes use {pct(idle(self.processes))} of a core, "
            f"the relay's {pct(idle(relay))}",
        ]
        return lines

    def _render_verdict(self) -> list[str]:
        short = self.shortfalls()
        if not short:
            return ["every DESIGN §8 target measured here is met (kill switch: `agentbus bench kill-switch`)"]
        return [
            "short of DESIGN §8: "
            + "; ".join(f"{t.name} {num(t.value, 1, 2)} (target {t.bound_text()})" for t in short)
        ]


def num(value: float | None, scale: float = 1.0, digits: int | None = None) -> str:
    """A figure for the table: '-' when unknown; digits by magnitude unless given."""
    if value is None:
        return "-"
    v = value * scale
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{digits}f}"


def cpu_per_ticket(processes: list[Process], side: Side) -> float | None:
    """CPU ms per ticket the processes used in the max-rate phase (polling included: a busy
    consumer polls less than an idle one, so the idle share is not subtracted)."""
    known = [p.cpu_max_rate_s for p in processes if p.cpu_max_rate_s is not None]
    if not known or not side.tickets:
        return None
    return sum(known) * 1000 / side.tickets


def short_topic(name: str) -> str:
    """agentbus.actions.proposed.v1 → actions.proposed"""
    parts = name.split(".")
    if parts and parts[0] == "agentbus":
        parts = parts[1:]
    if parts and parts[-1][:1] == "v" and parts[-1][1:].isdigit():
        parts = parts[:-1]
    return ".".join(parts) or name


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"
