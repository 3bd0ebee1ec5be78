"""Adaptive fault isolation: which measurements to run next, and what the results mean.

Pure: node names and measurement results in, the next round of measurements
and a final verdict out.  No Ray, no clock, no I/O, so the real driver
(``cluster.isolate_run``) and a simulated fabric (benchmarks/isolation_scale.py,
tests/test_isolate.py) drive the same code.

The method is group testing, as fleet tools do it (NVIDIA's Cluster Readiness
Engine design note "adaptive fault isolation"): measure groups of about
sqrt(N) nodes at once, bisect only the groups that fail, and name a node only
after it has failed *again* beside a node that passed (its confirmation).
A collective over a group is as fast as its slowest member or link, so one
bad node drags its whole group down and the other groups clear their members.

Rounds: the measurements of one round share no node (a node in two
collectives at once halves both, and a healthy node would look slow), so a
round runs all of its measurements at the same time.

Failure of a measurement, judged at the end of the round it ran in:
  error   the collective failed (a rank raised, wrong results), or it timed
          out twice (a timeout is retried once, in the next round; an error is
          not: the bisection that follows is its retry, and a transient error
          ends as "unexplained" there)
  floor   busbw below ``Policy.floor`` (the profile's min_busbw)
  slow    busbw below ``Policy.straggler_factor`` x the fleet median (the
          median of the first round's groups: an unbiased sample of the fleet)
A fleet whose median is below the floor is one finding about the fleet
(``Verdict.fleet``), and the floor is then not applied node by node.
A node Ray reports dead is named at once and the rest of its measurement is
measured again without it.

Bisection of a failed set S (``_search``):
  |S| <= 3   confirm every member: the member + one cleared node
  else       measure both halves (same round); a failing half is searched
             again; if both halves pass, the fault needs a member of each
             half: a bad link, searched across the halves (``_cross``)
Confirmation: a suspect is measured with a cleared node; failing that, once
more with another cleared node.  Failing both -> bad (error/floor) or
straggler (slow); one pass out of two -> "flaky", not quarantined.
A set none of whose parts fails is recorded as unexplained (a transient), and
nothing is quarantined for it: false quarantine costs a healthy node.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Iterable

FAIL_KINDS = ("error", "floor", "slow")


@dataclasses.dataclass(frozen=True)
class Policy:
    group_size: int | None = None       # default round(sqrt(N)), at least 2, at most N/3 (3 groups)
    floor: float | None = None          # GB/s: the profile's min_busbw (None: no floor)
    straggler_factor: float = 0.5       # slow: below this x the fleet median (0 turns it off)
    retries: int = 1                    # a timed-out measurement is run again this often
    confirmations: int = 2              # failing confirmations (each with another cleared node) to name a node

    def __post_init__(self) -> None:
        if self.group_size is not None and self.group_size < 2:
            raise ValueError("group_size must be >= 2")
        if not 0 <= self.straggler_factor < 1:
            raise ValueError("straggler_factor must be in [0, 1)")
        if self.retries < 0 or self.confirmations < 1:
            raise ValueError("retries must be >= 0 and confirmations >= 1")


@dataclasses.dataclass(frozen=True)
class Measurement:
    id: int
    nodes: tuple[str, ...]
    purpose: str                         # screen | bisect | cross | confirm | link
    attempt: int = 1
    ref: str | None = None               # confirm: the cleared node measured with the suspect

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Observation:
    busbw: float | None = None           # GB/s; None when the collective did not finish
    error: str | None = None             # why it did not finish (a rank's error)
    timed_out: bool = False
    dead: tuple[str, ...] = ()           # nodes Ray reports gone


@dataclasses.dataclass
class Verdict:
    bad: dict[str, str]                  # node -> reason (error / below floor / left the cluster)
    stragglers: dict[str, str]           # node -> reason (slow against the fleet median)
    bad_links: dict[tuple[str, str], str]
    flaky: dict[str, str]                # failed one confirmation of two: reported, not quarantined
    unexplained: list[str]               # failed sets whose parts all passed (transients)
    unjudged: dict[str, str]             # could not be judged (no cleared node to confirm against)
    cleared: list[str]
    median: float | None
    fleet: str | None
    measurements: int
    rounds: int
    log: list[dict]

    @property
    def quarantine(self) -> dict[str, str]:
        """Nodes to take out of service, with the reason: bad ones and stragglers."""
        return {**self.bad, **self.stragglers}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["bad_links"] = [{"a": a, "b": b, "why": w} for (a, b), w in sorted(self.bad_links.items())]
        d["quarantine"] = self.quarantine
        return d


def partition(nodes: list[str], size: int) -> list[list[str]]:
    """``nodes`` in len//size groups whose sizes differ by at most one (none smaller than 2)."""
    k = max(1, len(nodes) // size)
    base, extra = divmod(len(nodes), k)
    out, i = [], 0
    for j in range(k):
        n = base + (1 if j < extra else 0)
        out.append(nodes[i:i + n])
        i += n
    return out


class Planner:
    """``next_round()`` -> measurements to run now (disjoint); ``record(id, Observation)`` for
    each; repeat until ``next_round()`` returns []; then ``verdict()``."""

    def __init__(self, nodes: Iterable[str], policy: Policy | None = None) -> None:
        self.nodes = list(dict.fromkeys(nodes))
        self.p = policy or Policy()
        self.groups: list[list[str]] = []
        self._next_id = 0
        self.rounds = 0
        self.log: list[dict] = []
        self.cleared: set[str] = set()
        self.dead: dict[str, str] = {}
        self.bad: dict[str, str] = {}
        self.stragglers: dict[str, str] = {}
        self.bad_links: dict[tuple[str, str], str] = {}
        self.flaky: dict[str, str] = {}
        self.unexplained: list[str] = []
        self.unjudged: dict[str, str] = {}
        self.median: float | None = None
        self.fleet: str | None = None           # a finding about the whole fleet (e.g. all below the floor)
        self._floor = self.p.floor
        self._screen_values: list[float] = []
        # work waiting for a measurement: (kind, payload); kinds below
        self._todo: list[tuple[str, dict]] = []
        self._running: dict[int, tuple[Measurement, dict]] = {}   # id -> (measurement, its work item)
        self._results: dict[int, Observation] = {}
        self._confirm_fails: dict[str, list[tuple[str, str]]] = {}  # node -> [(kind, why)]
        self._confirm_refs: dict[str, set[str]] = {}
        self._confirmed: set[str] = set()                           # passed a confirmation
        size = self.p.group_size or max(2, round(math.sqrt(len(self.nodes))))
        if len(self.nodes) >= 6:
            size = min(size, len(self.nodes) // 3)  # at least 3 groups: a median of two says nothing
        if len(self.nodes) >= 2:
            self.groups = partition(self.nodes, size)
            for g in self.groups:
                self._todo.append(("measure", {"nodes": tuple(g), "purpose": "screen", "then": ("set", {})}))
        elif self.nodes:
            self.unjudged[self.nodes[0]] = "a single node: a collective needs at least two"

    # ------------------------------------------------------------ driving

    def next_round(self) -> list[Measurement]:
        if self._running:
            missing = sorted(set(self._running) - set(self._results))
            if missing:
                raise RuntimeError(f"next_round() before record() of measurement(s) {missing}")
            self._judge_round()
        out: list[Measurement] = []
        busy: set[str] = set()
        later: list[tuple[str, dict]] = []
        todo, self._todo = self._todo, []
        for kind, w in todo:
            m = self._place(kind, w, busy)
            if m is None:
                later.append((kind, w))
                continue
            busy.update(m.nodes)
            self._running[m.id] = (m, w)
            out.append(m)
        self._todo = later + self._todo
        if not out and self._todo:
            # nothing can be placed and nothing will clear a node: the rest cannot be judged
            for kind, w in self._todo:
                for n in w["nodes"]:
                    if n not in self.dead and n not in self.bad and n not in self.stragglers:
                        self.unjudged.setdefault(n, "no node passed a measurement to confirm it against")
            self._todo = []
        if out:
            self.rounds += 1
        return out

    def record(self, mid: int, obs: Observation) -> None:
        if mid not in self._running:
            raise KeyError(f"no running measurement {mid}")
        self._results[mid] = obs

    @property
    def done(self) -> bool:
        return not self._todo and not self._running

    def verdict(self) -> Verdict:
        if not self.done:
            raise RuntimeError("verdict() before isolation finished")
        bad = dict(self.dead)
        for n, why in self.bad.items():
            bad.setdefault(n, why)
        cleared = sorted(self.cleared - set(bad) - set(self.stragglers))
        return Verdict(bad=bad, stragglers=dict(self.stragglers), bad_links=dict(self.bad_links), flaky=dict(self.flaky),
                       unexplained=list(self.unexplained), unjudged=dict(self.unjudged), cleared=cleared,
                       median=self.median, fleet=self.fleet, measurements=len(self.log), rounds=self.rounds, log=list(self.log))

    # ------------------------------------------------------------ placing work

    def _new(self, nodes: tuple[str, ...], purpose: str, attempt: int = 1, ref: str | None = None) -> Measurement:
        self._next_id += 1
        return Measurement(self._next_id, nodes, purpose, attempt, ref)

    def _free_ref(self, busy: set[str], avoid: set[str]) -> str | None:
        for n in sorted(self.cleared):
            if n not in busy and n not in avoid and n not in self.dead:
                return n
        return None

    def _place(self, kind: str, w: dict, busy: set[str]) -> Measurement | None:
        nodes = tuple(n for n in w["nodes"] if n not in self.dead)
        if kind == "measure":
            if busy & set(nodes):
                return None
            return self._new(nodes, w["purpose"], w.get("attempt", 1))
        if kind == "confirm":
            (n,) = nodes
            if n in busy:
                return None
            ref = self._free_ref(busy, self._confirm_refs.get(n, set()) | {n})
            if ref is None:
                ref = self._free_ref(busy, {n})          # every cleared node used once already: reuse one
            if ref is None:
                return None
            return self._new((n, ref), "confirm", w.get("attempt", 1), ref=ref)
        raise AssertionError(kind)

    # ------------------------------------------------------------ judging

    def _fail_kind(self, obs: Observation) -> tuple[str | None, str]:
        if obs.busbw is None:
            return "error", obs.error or ("no answer (timed out)" if obs.timed_out else "no result")
        if self._floor is not None and obs.busbw < self._floor:
            return "floor", f"{obs.busbw:.3g} GB/s < floor {self._floor:g} GB/s"
        if self.median and self.p.straggler_factor > 0 and obs.busbw < self.p.straggler_factor * self.median:
            return "slow", (f"{obs.busbw:.3g} GB/s < {self.p.straggler_factor:g} x fleet median "
                            f"{self.median:.3g} GB/s")
        return None, f"{obs.busbw:.3g} GB/s"

    def _judge_round(self) -> None:
        running, results = self._running, self._results
        self._running, self._results = {}, {}
        if self.median is None:
            vals = [o.busbw for mid, o in results.items() if running[mid][0].purpose == "screen" and o.busbw is not None]
            if vals:
                self.median = statistics.median(vals)
                if self._floor is not None and self.median < self._floor:
                    # the whole fleet is below the floor: a fabric-wide cause (or a wrong profile), not a
                    # node fault; quarantining every node would take the fleet down for one setting
                    self.fleet = (f"the fleet median {self.median:.3g} GB/s is below the floor {self._floor:g} GB/s: "
                                  "a fabric-wide problem or a wrong min_busbw, not one node; the floor is not "
                                  "applied per node")
                    self._floor = None
        for mid in sorted(running):
            m, w = running[mid]
            obs = results[mid]
            newly_dead = [n for n in obs.dead if n in m.nodes and n not in self.dead]
            for n in newly_dead:
                # Ray says it left the cluster, or it stopped answering (the error says which)
                self.dead[n] = f"gone during isolation ({m.purpose} measurement {m.id}): " \
                               f"{obs.error or 'Ray reports the node dead'}"
            kind, why = (None, "") if newly_dead else self._fail_kind(obs)
            entry = dict(m.to_dict(), busbw=obs.busbw, error=obs.error, timed_out=obs.timed_out,
                         dead=list(obs.dead), round=self.rounds, verdict="dead" if newly_dead else (kind or "pass"),
                         why=why)
            self.log.append(entry)
            if newly_dead:
                rest = tuple(n for n in w["nodes"] if n not in self.dead)
                # measure the survivors again: the dead node says nothing about them
                self._redo(w, rest)
                continue
            if obs.timed_out and m.attempt <= self.p.retries:
                self._todo.append(self._again(w))          # no answer: once more, alone (the next round)
                continue
            self._then(w, m, kind, why)

    def _again(self, w: dict) -> tuple[str, dict]:
        w2 = dict(w, attempt=w.get("attempt", 1) + 1)
        return ("confirm" if w.get("confirm") else "measure", w2)

    def _redo(self, w: dict, rest: tuple[str, ...]) -> None:
        if w.get("confirm"):
            if w["nodes"][0] not in self.dead:
                self._todo.append(("confirm", dict(w, attempt=1)))   # the reference died: another one
            elif w.get("small"):
                self._small_done(w["small"])
            return
        if len(rest) >= 2:
            self._todo.append(("measure", dict(w, nodes=rest, attempt=1)))
            return
        # one survivor or none: it cannot form a collective alone; confirm it beside a cleared node
        if rest and rest[0] not in self.cleared:
            self._confirm(rest[0])
        follow, data = w["then"]
        if follow in ("halves", "cross"):   # this part is done: the dead node explains it
            data["explained"] = True
            data["out"][w["side"]] = (None, "", rest if follow == "halves" else w["pair"])
            if len(data["out"]) == (2 if follow == "halves" else data["want"]):
                (self._after_halves if follow == "halves" else self._after_cross)(data)

    def _then(self, w: dict, m: Measurement, kind: str | None, why: str) -> None:
        if w.get("confirm"):
            return self._after_confirm(w, m, kind, why)
        nodes = tuple(n for n in w["nodes"] if n not in self.dead)
        if kind is None:
            self.cleared.update(nodes)
        follow, data = w["then"]
        if follow == "set":
            if kind is not None:
                self._search(nodes, kind, why)
        elif follow == "halves":
            data["out"][w["side"]] = (kind, why, nodes)
            if len(data["out"]) == 2:
                self._after_halves(data)
        elif follow == "cross":
            data["out"][w["side"]] = (kind, why, w["pair"])
            if len(data["out"]) == data["want"]:
                self._after_cross(data)
        elif follow == "link":
            a, b = w["pair"]
            if kind is None:
                self.unexplained.append(f"link {a} <-> {b} failed inside a group, passed alone")
            elif m.attempt <= self.p.retries:
                self._todo.append(("measure", dict(w, attempt=m.attempt + 1)))
            else:
                def name() -> None:
                    if not (self._named(a) or self._named(b)):
                        self.bad_links[(a, b)] = f"{why}; both ends pass beside other nodes"
                self._confirm_all((a, b), name)
        else:
            raise AssertionError(follow)

    # bisection of a failed set
    def _search(self, s: tuple[str, ...], kind: str, why: str) -> None:
        s = tuple(n for n in s if n not in self.dead)
        if len(s) <= 3:
            # confirm each member; if none of them is named, the fault lies between them: their links
            self._confirm_all(s, lambda: self._links_among(s))
            return
        h = len(s) // 2
        data = {"out": {}, "sets": (s[:h], s[h:]), "parent": s, "why": why}
        for side, part in enumerate(data["sets"]):
            self._todo.append(("measure", {"nodes": part, "purpose": "bisect", "side": side, "then": ("halves", data)}))

    def _named(self, n: str) -> bool:
        return n in self.dead or n in self.bad or n in self.stragglers

    def _confirm_all(self, nodes, after) -> None:
        """Confirm each of ``nodes`` (skipping those confirmed already), then call ``after()``."""
        todo = [n for n in nodes if n not in self._confirmed and not self._named(n)]
        if not todo:
            return after()
        small = {"left": len(todo), "after": after}
        for n in todo:
            self._todo.append(("confirm", {"nodes": (n,), "confirm": True, "small": small}))

    def _small_done(self, small: dict) -> None:
        small["left"] -= 1
        if not small["left"]:
            small["after"]()

    def _links_among(self, s: tuple[str, ...]) -> None:
        if any(self._named(n) for n in s):
            return                      # a named member explains the set's failure
        for i, a in enumerate(s):
            for b in s[i + 1:]:
                self._link(a, b)

    def _after_halves(self, data: dict) -> None:
        out = data["out"]
        failing = [(side, out[side]) for side in (0, 1) if out[side][0] is not None]
        for side, (kind, why, nodes) in failing:
            self._search(nodes, kind, why)
        if not failing and not data.get("explained"):
            a, b = out[0][2], out[1][2]
            self._cross(a, b, data["why"])

    # a fault that needs one member of each half: search A x B
    def _cross(self, a: tuple[str, ...], b: tuple[str, ...], why: str) -> None:
        a = tuple(n for n in a if n not in self.dead)
        b = tuple(n for n in b if n not in self.dead)
        if not a or not b:
            return
        if len(a) == 1 and len(b) == 1:
            return self._link(a[0], b[0])
        single = [x[0] for x in (a, b) if len(x) == 1 and x[0] not in self._confirmed]
        if single:
            # one node failing beside several others: more likely that node than many links; confirm it first
            return self._confirm_all(single, lambda: None if self._named(single[0]) else self._cross(a, b, why))
        a1, a2 = (a[: len(a) // 2], a[len(a) // 2:]) if len(a) > 1 else (a, ())
        b1, b2 = (b[: len(b) // 2], b[len(b) // 2:]) if len(b) > 1 else (b, ())
        combos = [(x, y) for x, y in ((a1, b1), (a2, b2), (a1, b2), (a2, b1)) if x and y]
        data = {"out": {}, "want": len(combos), "why": why, "combos": combos}
        for side, (x, y) in enumerate(combos):
            self._todo.append(("measure", {"nodes": x + y, "purpose": "cross", "side": side, "pair": (x, y),
                                           "then": ("cross", data)}))

    def _after_cross(self, data: dict) -> None:
        failing = [v for v in data["out"].values() if v[0] is not None]
        for kind, why, (x, y) in failing:
            self._cross(x, y, why)
        if not failing and not data.get("explained"):
            names = sorted({n for x, y in data["combos"] for n in x + y})
            self.unexplained.append(f"group of {', '.join(names[:6])}{' ...' if len(names) > 6 else ''} "
                                    f"failed ({data['why']}), every part of it passed")

    def _link(self, a: str, b: str) -> None:
        self._todo.append(("measure", {"nodes": (a, b), "purpose": "link", "pair": (a, b), "then": ("link", {})}))

    # confirmation of one suspect against cleared nodes
    def _confirm(self, n: str) -> None:
        self._confirm_all((n,), lambda: None)

    def _after_confirm(self, w: dict, m: Measurement, kind: str | None, why: str) -> None:
        n = m.nodes[0]
        self._confirm_refs.setdefault(n, set()).add(m.ref)
        fails = self._confirm_fails.setdefault(n, [])
        if kind is None:
            self.cleared.add(n)
            self._confirmed.add(n)
            if fails:
                self.flaky[n] = f"failed beside {len(fails)} cleared node(s) ({fails[0][1]}), passed beside {m.ref}"
            if w.get("small"):
                self._small_done(w["small"])
            return
        fails.append((kind, f"{why} (beside {m.ref})"))
        if len(fails) < self.p.confirmations:
            self._todo.append(("confirm", dict(w, attempt=1)))
            return
        kinds = [k for k, _ in fails]
        reason = "; ".join(w for _, w in fails)
        if "error" in kinds or "floor" in kinds:
            self.bad[n] = reason
        else:
            self.stragglers[n] = reason
        if w.get("small"):
            self._small_done(w["small"])
