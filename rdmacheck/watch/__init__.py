"""``rdmacheck watch``: re-run the node gates every S seconds and keep the latest state for /metrics.

One *cycle* judges the node exactly as ``rdmacheck preflight`` does (in-process:
no interpreter start, no torch, never the bench) and samples the RDMA port and
netdev counters of the selected ports (``facts/counters.py``).  The cycle
builds a new immutable :class:`State`; the HTTP thread only ever reads the
latest one, so a scrape never waits for a cycle and never sees half of one.

Counter rates are deltas between two cycles over the time between them; a
counter that went down (reset) or saturated has no rate that cycle (never a
negative or a made-up zero, see ``counter_delta``).  Which counters are watched
is decided by name (``category()``): errors, link downs, retransmits, pause,
CNP/ECN; drivers name them differently (mlx5 ``np_cnp_sent``, rxe
``retry_exceeded_err``, the PMA's ``link_downed``), and a node exports whatever
of them it has.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Any, Callable

from rdmacheck.preflight.facts.counters import counter_delta, parse_counter, read_sample
from rdmacheck.evidence.model import Result, Status

# Gauge values of rdmacheck_gate_status: what the issue and the alert rules use.
STATUS_VALUE = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.SKIP: 3}

# netdev files outside statistics/ that count link downs
NETDEV_LINK_FILES = ("carrier_down_count", "carrier_changes")

# (category, substrings of a counter name), first match wins; names are matched lower-case
_CATEGORIES = (
    ("link_downs", ("link_downed", "carrier_down", "carrier_changes")),
    ("cnp_ecn", ("cnp", "ecn", "_ce_pkts")),
    ("pause", ("pause", "xmit_wait")),
    ("retransmits", ("retrans", "retry", "retries", "out_of_seq", "seq_err", "duplicate_request", "timeout", "rnr",
                     "slow_restart")),
    ("errors", ("_err", "error", "discard", "drop", "integrity", "overrun", "symbol", "crc", "fifo", "missed",
                "out_of_buffer")),
)


def category(name: str) -> str | None:
    """The watched category of a counter name, or None for traffic counters (bytes, packets)."""
    n = name.lower()
    for cat, keys in _CATEGORIES:
        if any(k in n for k in keys):
            return cat
    return None


@dataclasses.dataclass(frozen=True)
class CounterPoint:
    kind: str        # "port" or "netdev"
    device: str      # "roceP2p1s0f0/1" or "enP2p1s0f0np0"
    counter: str     # "hw_counters/retry_exceeded_err", "statistics/rx_errors", "carrier_down_count"
    category: str
    value: int
    rate: float | None   # per second since the previous cycle; None on the first cycle, a reset or saturation


@dataclasses.dataclass(frozen=True)
class Judged:
    """One gather + gates pass: what a cycle exports and where its counters are read."""

    root: Any                        # the HostRoot the facts were read through
    ports: list[Any]                 # the selected RDMA ports (their devices and netdevs are sampled)
    results: list[Result]
    summary: dict[str, Any]          # preflight's facts summary (the evidence's context.facts)


@dataclasses.dataclass(frozen=True)
class State:
    """Everything one scrape exports: the latest cycle's verdicts, facts and counters."""

    time: float                      # wall clock (seconds since the epoch) when the cycle finished
    duration: float                  # seconds the cycle took
    cycles: int
    results: tuple[Result, ...]
    facts: dict[str, Any]
    counters: tuple[CounterPoint, ...]
    error: str | None = None         # a cycle that could not run at all (its gates keep the last values)
    # per selected RDMA port: the lossless verdict of the counter deltas since the previous cycle
    # (facts.lossless; none on the first cycle)
    lossless: tuple[tuple[str, Any], ...] = ()


def _select(ports) -> tuple[list[str] | None, list[str] | None]:
    """RDMA devices and netdevs to sample: the selected ports', else everything present."""
    devices = sorted({p.device for p in ports or []})
    netdevs = sorted({n for p in ports or [] for n in (p.netdevs or [])})
    return (devices or None), (netdevs or None)


def sample_counters(root, devices: list[str] | None, netdevs: list[str] | None) -> dict[tuple[str, str, str], int]:
    """(kind, device, counter) -> value, for the counters in a watched category."""
    out: dict[tuple[str, str, str], int] = {}
    s = read_sample(root, devices, netdevs)
    for key, pc in s.ports.items():
        for fam in ("counters", "hw_counters"):
            for name, v in getattr(pc, fam).items():
                if category(name):
                    out[("port", key, f"{fam}/{name}")] = v
    for name, nc in s.netdevs.items():
        for stat, v in nc.stats.items():
            if category(stat):
                out[("netdev", name, f"statistics/{stat}")] = v
        for f in NETDEV_LINK_FILES:
            v = parse_counter(root.read(f"/sys/class/net/{name}/{f}", limit=64))
            if v is not None:
                out[("netdev", name, f)] = v
    return out


def verdict_line(results: list[Result]) -> str:
    """preflight's verdict for the node (output.console.verdict_line, the exit code's rule), the failing and
    warning gates by name, the others counted: what a terminal or a journal shows once per change."""
    from rdmacheck.output.console import verdict_line as console_verdict

    by: dict[str, list[str]] = {}
    for r in results:
        key = "waived" if r.status is Status.FAIL and r.waiver else ("unjudged" if r.unjudged else r.status.value)
        by.setdefault(key, []).append(r.id)
    verdict = console_verdict(results)[0]
    named = [f"{k} {', '.join(by[k])}" for k in ("fail", "unjudged", "warn") if by.get(k)]
    counted = [f"{len(by[k])} {k}" for k in ("waived", "pass", "skip") if by.get(k)]
    return f"{verdict}: " + "; ".join(named + [", ".join(counted)] if counted else named)


class Watcher:
    """Runs cycles; ``state`` is the latest one (None before the first)."""

    def __init__(self, judge: Callable[[], "Judged"],
                 log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        # judge() -> Judged: the gather + gates step, in one place (preflight_judge)
        self.judge = judge
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.state: State | None = None
        self._prev: tuple[float, dict[tuple[str, str, str], int]] | None = None
        self._last_status: dict[str, Status] = {}
        self.cycles = 0

    def cycle(self) -> State:
        t0 = time.monotonic()
        self.cycles += 1
        ports: list[Any] = []
        try:
            j = self.judge()
            results, facts, ports = j.results, j.summary, list(j.ports)
            devices, netdevs = _select(j.ports)
            values = sample_counters(j.root, devices, netdevs)
            error = None
        except Exception as e:  # a cycle that cannot run keeps serving the last verdicts, marked
            prev = self.state
            results = list(prev.results) if prev else []
            facts = dict(prev.facts) if prev else {}
            values, error = {}, f"{type(e).__name__}: {e}"
            self.log(f"rdmacheck watch: cycle {self.cycles} failed: {error}")
        now_mono = time.monotonic()
        points = []
        deltas: dict[tuple[str, str, str], int | None] = {}
        for (kind, dev, name), v in sorted(values.items()):
            rate = None
            if self._prev is not None:
                before = self._prev[1].get((kind, dev, name))
                dt = now_mono - self._prev[0]
                d = counter_delta(before, v)
                if before is not None:
                    deltas[(kind, dev, name)] = d
                if d is not None and dt > 0:
                    rate = d / dt
            points.append(CounterPoint(kind, dev, name, category(name.rpartition("/")[2]) or "errors", v, rate))
        lossless = _lossless(deltas, ports) if deltas else ()
        if values:
            self._prev = (now_mono, values)
        self._log_changes(results)
        st = State(time=self.clock(), duration=time.monotonic() - t0, cycles=self.cycles,
                   results=tuple(results), facts=facts, counters=tuple(points), error=error, lossless=lossless)
        self.state = st
        return st

    def _log_changes(self, results: list[Result]) -> None:
        """The node's verdict on the first cycle and whenever a gate changed (one line: the failing and warning
        gates by name, the rest counted), and one line per gate whose status changed since the previous cycle."""
        now = {r.id: r.status for r in results}
        stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.clock()))
        changed = False
        if self._last_status:
            for gid in sorted(set(now) | set(self._last_status)):
                a, b = self._last_status.get(gid), now.get(gid)
                if a != b:
                    changed = True
                    obs = next((r.observed for r in results if r.id == gid), "")
                    self.log(f"{stamp} gate {gid}: "
                             f"{a.value if a else 'absent'} -> {b.value if b else 'absent'}"
                             + (f" ({obs[:200]})" if obs else ""))
        if results and (not self._last_status or changed):
            self.log(f"{stamp} cycle {self.cycles}: {verdict_line(results)}")
        self._last_status = now

    def run_forever(self, interval: float, stop: threading.Event) -> None:
        """A cycle now, then one every ``interval`` seconds (measured start to start) until ``stop``."""
        nxt = time.monotonic()
        while not stop.is_set():
            self.cycle()
            nxt += interval
            delay = nxt - time.monotonic()
            if delay < 0:  # a cycle longer than the interval: start the next at once, never pile up
                nxt = time.monotonic()
                delay = 0
            stop.wait(delay)


def _lossless(deltas: dict[tuple[str, str, str], int | None], ports: list[Any]) -> tuple[tuple[str, Any], ...]:
    """The lossless verdict of each selected port over the last interval (facts.lossless.verdict)."""
    from rdmacheck.preflight.facts.lossless import verdict
    from .health import port_windows

    return tuple((k, verdict(w)) for k, w in sorted(port_windows(deltas, ports).items()))


def preflight_judge(root_dir: str, env: str | None, profile: str | None, expect: list[str] | None):
    """judge() for Watcher: the configuration is read once (bad input fails at start, exit 2); every cycle
    gathers the node's facts afresh through a new HostRoot (preflight.run),
    exactly as `rdmacheck preflight` does."""
    from rdmacheck import preflight
    from rdmacheck.preflight.root import HostRoot
    from rdmacheck.watch.health import health_summary

    _, cfg = preflight.open_config(HostRoot(root_dir), env, profile, expect)

    def judge() -> Judged:
        done = preflight.run(HostRoot(root_dir), config=cfg)
        sel = done.facts.selection
        summary = {**done.summary(), "health": health_summary(done.facts)}  # watch/health.py: GPU, Xid, NIC
        return Judged(done.root, list(sel.ports) if sel else [], done.results, summary)

    return judge
