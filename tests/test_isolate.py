"""The isolation planner (rdmacheck.cluster.isolate), pure: driven by a small fabric model.

The fabric here is deterministic: a group's busbw is 10 GB/s times the worst
factor of its members and of the links between them; a bad node makes the
collective fail.  Ground truth is what the test planted; the planner never
sees it.  The noisy, large-N proof is benchmarks/isolation_scale.py.
"""

from __future__ import annotations

import itertools
import random

import pytest

from rdmacheck.cluster.isolate import Observation, Planner, Policy, partition


class Fab:
    def __init__(self, nodes, bad=(), slow=None, links=None, script=None):
        self.nodes = list(nodes)
        self.bad = set(bad)
        self.slow = dict(slow or {})          # node -> factor
        self.links = dict(links or {})        # frozenset(a, b) -> factor
        self.script = list(script or [])      # observations handed out first, in order (transients)
        self.calls = []

    def measure(self, nodes):
        self.calls.append(nodes)
        if self.script:
            return self.script.pop(0)
        if self.bad & set(nodes):
            return Observation(None, error="RuntimeError: connection reset by peer")
        f = min([self.slow.get(n, 1.0) for n in nodes]
                + [v for k, v in self.links.items() if k <= set(nodes)])
        return Observation(10.0 * f)


def drive(fab, policy=None, on_round=None):  # noqa: D103
    pl = Planner(fab.nodes, policy or Policy(floor=3.0))
    rounds = []
    while True:
        ms = pl.next_round()
        if not ms:
            break
        members = [n for m in ms for n in m.nodes]
        assert len(members) == len(set(members)), f"a node in two measurements of one round: {ms}"
        rounds.append(ms)
        for m in ms:
            obs = on_round(len(rounds), m) if on_round else None
            pl.record(m.id, obs if obs is not None else fab.measure(m.nodes))
    return pl.verdict(), rounds


def names(n):
    return [f"node{i:03d}" for i in range(n)]


def test_partition_sizes_differ_by_at_most_one_and_cover_everything():
    for n in range(2, 200):
        size = max(2, round(n ** 0.5))
        gs = partition(names(n), size)
        assert sorted(x for g in gs for x in g) == names(n)
        assert max(map(len, gs)) - min(map(len, gs)) <= 1
        assert min(map(len, gs)) >= 2


def test_healthy_fleet_is_one_round_of_sqrt_n_groups_and_quarantines_nothing():
    v, rounds = drive(Fab(names(100)))
    assert v.rounds == 1 and len(rounds[0]) == 10 and v.measurements == 10
    assert {len(m.nodes) for m in rounds[0]} == {10}
    assert v.quarantine == {} and v.bad_links == {} and v.cleared == names(100)
    assert v.median == 10.0


def test_one_bad_node_in_512_is_named_within_the_targets():
    for seed in range(5):
        nodes = names(512)
        culprit = random.Random(seed).choice(nodes)
        v, _ = drive(Fab(nodes, bad=[culprit]))
        assert list(v.bad) == [culprit] and not v.stragglers and not v.bad_links
        assert "connection reset" in v.bad[culprit] and "beside" in v.bad[culprit]  # confirmed beside cleared nodes
        assert v.measurements <= 40 and v.rounds <= 12, (v.measurements, v.rounds)
        assert culprit not in v.cleared and len(v.cleared) == 511


def test_a_slow_node_is_a_straggler_and_the_reason_says_how_much():
    nodes = names(36)
    v, _ = drive(Fab(nodes, slow={"node017": 0.4}), Policy(floor=3.0, straggler_factor=0.5))
    assert list(v.stragglers) == ["node017"] and not v.bad
    assert "4 GB/s < 0.5 x fleet median 10 GB/s" in v.stragglers["node017"]
    assert v.quarantine == v.stragglers
    # the same node with the rule off (factor 0) and no floor: nothing to name
    v, _ = drive(Fab(nodes, slow={"node017": 0.4}), Policy(floor=None, straggler_factor=0.0))
    assert v.quarantine == {}


def test_below_the_floor_is_bad_not_a_straggler():
    v, _ = drive(Fab(names(36), slow={"node020": 0.2}), Policy(floor=3.0))
    assert list(v.bad) == ["node020"] and "< floor 3 GB/s" in v.bad["node020"]


def test_three_bad_nodes_and_every_round_disjoint():
    for seed in range(10):
        nodes = names(random.Random(seed).randint(8, 300))
        bad = random.Random(seed).sample(nodes, 3)
        v, _ = drive(Fab(nodes, bad=bad))
        assert set(v.bad) == set(bad), seed
        assert not set(v.cleared) & set(bad)


def test_a_bad_link_inside_a_group_is_named_and_neither_end_quarantined():
    nodes = names(25)
    g = Planner(nodes, Policy()).groups[2]
    a, b = g[1], g[3]
    v, _ = drive(Fab(nodes, links={frozenset((a, b)): 0.1}))
    assert list(v.bad_links) == [tuple(sorted((a, b)))] and v.quarantine == {}


def test_a_timeout_is_retried_once_and_a_second_timeout_counts_as_failure():
    nodes = names(16)
    timeouts = {"left": 1}

    def once(r, m):
        if r == 1 and "node005" in m.nodes and timeouts["left"]:
            timeouts["left"] -= 1
            return Observation(None, error="no answer within 130 s", timed_out=True)
        return None

    v, rounds = drive(Fab(nodes), on_round=once)
    assert v.quarantine == {} and v.rounds == 2
    retried = [m for m in rounds[1]]
    assert len(retried) == 1 and "node005" in retried[0].nodes and retried[0].attempt == 2

    def always(r, m):  # node005 never answers: after the retry it is bisected and named
        if "node005" in m.nodes:
            return Observation(None, error="no answer within 130 s", timed_out=True)
        return None

    v, _ = drive(Fab(nodes), on_round=always)
    assert list(v.bad) == ["node005"] and "no answer" in v.bad["node005"]


def test_a_transient_dip_is_unexplained_and_quarantines_nothing():
    nodes = names(16)
    first = {"done": False}

    def dip(r, m):
        if r == 1 and not first["done"]:
            first["done"] = True
            return Observation(2.0)      # the first group, once, below the floor
        return None

    v, _ = drive(Fab(nodes), on_round=dip)
    assert v.quarantine == {} and v.bad_links == {}
    assert v.unexplained, v.log


def test_one_failed_confirmation_of_two_is_flaky_not_quarantined():
    nodes = names(15)                      # groups of 3: a failed group goes straight to confirmation
    state = {"n": 0}

    def confirm_once(r, m):
        if r == 1 and "node000" in m.nodes:
            return Observation(None, error="RuntimeError: boom")
        if m.purpose == "confirm" and m.nodes[0] == "node000" and state["n"] == 0:
            state["n"] += 1
            return Observation(None, error="RuntimeError: boom")
        return None

    v, _ = drive(Fab(nodes), on_round=confirm_once, policy=Policy(floor=3.0, group_size=3))
    assert v.quarantine == {} and "node000" in v.flaky and "boom" in v.flaky["node000"]


def test_a_node_that_dies_is_named_and_its_group_is_measured_again_without_it():
    nodes = names(16)

    def die(r, m):
        if r == 1 and "node006" in m.nodes:
            return Observation(None, error="ActorDiedError: its node has died", dead=("node006",))
        return None

    v, rounds = drive(Fab(nodes), on_round=die)
    assert list(v.bad) == ["node006"] and "gone during isolation" in v.bad["node006"]
    assert "node has died" in v.bad["node006"]
    again = [m for m in rounds[1] if set(m.nodes) & {"node004", "node005", "node007"}]
    assert again and "node006" not in again[0].nodes
    assert len(v.cleared) == 15
    assert all("node006" not in m.nodes for ms in rounds[1:] for m in ms)


def test_two_nodes_that_fail_together_cannot_be_told_apart():
    v, _ = drive(Fab(names(2), bad=["node001"]))
    assert v.quarantine == {} and set(v.unjudged) == {"node000", "node001"}
    v, _ = drive(Fab(names(1)))
    assert "node000" in v.unjudged


def test_misuse_is_refused():
    pl = Planner(names(8))
    ms = pl.next_round()
    with pytest.raises(RuntimeError):
        pl.next_round()                   # results missing
    with pytest.raises(KeyError):
        pl.record(999, Observation(1.0))
    with pytest.raises(RuntimeError):
        pl.verdict()
    for kw in ({"group_size": 1}, {"straggler_factor": 1.0}, {"straggler_factor": -0.1}, {"confirmations": 0}):
        with pytest.raises(ValueError):
            Policy(**kw)
    assert ms


def test_verdict_serialises():
    import json

    v, _ = drive(Fab(names(30), bad=["node003"], slow={"node011": 0.4}))
    d = json.loads(json.dumps(v.to_dict()))
    assert set(d["quarantine"]) == {"node003", "node011"}
    assert d["measurements"] == len(d["log"]) and all("verdict" in e for e in d["log"])
    assert list(itertools.chain(d["bad_links"])) == []


def test_a_fleet_below_the_floor_is_one_fleet_finding_not_every_node_quarantined():
    v, _ = drive(Fab(names(20), slow={n: 0.1 for n in names(20)}), Policy(floor=3.0))
    assert v.quarantine == {} and v.fleet and "below the floor 3 GB/s" in v.fleet
