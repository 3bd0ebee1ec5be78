"""``rdmacheck cluster --isolate``: the planner (cluster.isolate) driven over real Ray actors.

Each measurement the planner asks for is one torch.distributed group of the
rank actors the cluster run already started (one per GPU with NCCL, one per
node with gloo), running the same bench runner as the cluster bench with
``--isolate-op`` at ``--isolate-sizes``; its value is rank 0's busbw at the
largest size.  The measurements of a round start together (they share no
node) and each is bounded by ``--measure-timeout`` from the round's start;
a timed-out group is killed, its actors replaced, and the planner retries it
once.  A node Ray reports dead is named at once (the Waiter's node-table
poll) and the planner measures the rest of its group without it.

After the last round: the verdict goes to cluster.json (context.isolate and
the ``cluster.isolate`` gate), one ``nodes/<label>/isolate.json`` per
measured node, the quarantine list (cluster.quarantine), and the validated
index (cluster.validated).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from pathlib import Path
from typing import Any

from rdmacheck.util.atomic import atomic_write
from rdmacheck.evidence.model import Evidence, Result, Status
from . import quarantine as qmod
from . import validated as vmod
from .nodes import GRACE_S, Node, Outcome, safe_name, say
from .isolate import Observation, Planner, Policy


@dataclasses.dataclass
class IsolateOptions:
    op: str = "all_reduce"
    sizes: list[int] = dataclasses.field(default_factory=lambda: [64 << 20])
    group_size: int | None = None
    straggler_factor: float = 0.5
    measure_timeout: float | None = None          # None: --node-timeout + the driver's grace
    quarantine_file: Path = qmod.DEFAULT_FILE
    quarantine_only: bool = False
    include_quarantined: bool = False
    validated_dir: Path = vmod.DEFAULT_DIR
    skip_validated_within: float | None = None
    # filled by the command before the run: what is left out, and why
    quarantined: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _utc(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def excluded(io: IsolateOptions, labels: list[str], now: float) -> None:
    """Fill ``io.quarantined`` / ``io.skipped`` for the nodes Ray lists (called once the labels are known)."""
    qlist = qmod.load(io.quarantine_file)
    io.quarantined = {} if io.include_quarantined else {l: qlist[l] for l in labels if l in qlist}
    io.skipped = {}
    if io.skip_validated_within is not None:
        recs = vmod.fresh(vmod.read(io.validated_dir, labels), io.skip_validated_within, now)
        io.skipped = {l: r for l, r in recs.items() if l not in io.quarantined and l not in qlist}
        left = [l for l in labels if l not in io.quarantined and l not in io.skipped]
        if len(left) == 1 and io.skipped:
            # a collective needs two: the one node to test is measured beside the most recently validated one
            partner = max(io.skipped, key=lambda l: float(io.skipped[l]["epoch"]))
            io.skipped.pop(partner)


def phase(run: Any, ray: Any) -> None:
    """The isolation phase of a ClusterRun (``run``): rounds until the planner is done."""
    o, io = run.o, run.o.isolate
    t_start = time.time()
    nodes = [n for n in run.nodes if n.ok and run.actors.get(n.label)
             and n.label not in io.quarantined and n.label not in io.skipped]
    by_label = {n.label: n for n in run.nodes}
    policy = Policy(group_size=io.group_size, floor=o.bench_opts.expect_busbw, straggler_factor=io.straggler_factor)
    planner = Planner([n.label for n in nodes], policy)
    bound = io.measure_timeout or (o.node_timeout + GRACE_S)
    opts = dataclasses.replace(o.bench_opts, ops=[io.op], sizes=list(io.sizes), backend=run.backend,
                               timeout=o.node_timeout, json_path=None, csv_path=None, progress=False,
                               plateau_min_bytes=min(io.sizes))
    say(f"isolate: {len(nodes)} node(s) in {len(planner.groups)} group(s) of about {len(planner.groups[0]) if planner.groups else 0}; "
        f"{io.op} at {max(io.sizes)} B, each measurement bounded by {bound:g} s"
        + (f"; left out: {len(io.quarantined)} quarantined, {len(io.skipped)} validated recently"
           if io.quarantined or io.skipped else ""))
    while True:
        ms = planner.next_round()
        if not ms:
            break
        run._refresh_all(ray)
        t_round = time.monotonic()
        say(f"isolate: round {planner.rounds}: {len(ms)} measurement(s): "
            + "; ".join(f"{m.purpose} {len(m.nodes)}" for m in ms[:6]) + (" ..." if len(ms) > 6 else ""))
        started = [(m, _start(run, ray, [by_label[x] for x in m.nodes], opts)) for m in ms]
        for m, (ranks, refs, obs) in started:
            if obs is None:
                left = max(1.0, round(bound - (time.monotonic() - t_round), 1))
                out = run.waiter.wait(refs, left, hard=True, abort_if_dead=True)
                run._retire(ray, ranks, out)
                obs = _observe(run, ranks, out, io.op)
            planner.record(m.id, obs)
            say(f"isolate: {m.purpose} {'+'.join(m.nodes[:4])}{'+...' if len(m.nodes) > 4 else ''}: "
                + (f"{obs.busbw:.3g} GB/s" if obs.busbw is not None else f"FAILED: {(obs.error or '')[:160]}"))
    _conclude(run, ray, planner, policy, bound, t_start)


def _start(run: Any, ray: Any, members: list[Node], opts) -> tuple[list, dict, Observation | None]:
    gone = [n.label for n in members if not n.ok]
    if gone:
        why = "; ".join(f"{by.label} {by.state} since {by.phase}: {by.error}" for by in members if not by.ok)
        # (dead: Ray says the node left; lost: its actor could not be restarted in time)
        return [], {}, Observation(None, error=why, dead=tuple(gone))
    ranks = [(n, a) for n in members for a in run.actors.get(n.label, [])]
    n0, a0 = ranks[0]
    port = run.waiter.wait({a0.free_port.remote(): ("port", n0.node_id)}, run.o.node_timeout, hard=True)["port"]
    if not port.ok:
        run._retire(ray, ranks, {0: port})
        if port.node_dead:
            n0.fail("dead", "isolate", port.error or "")
        return ranks, {}, Observation(None, error=f"rank 0 on {n0.label} could not pick a port: {port.error}",
                                      timed_out=port.timed_out, dead=(n0.label,) if port.node_dead else ())
    per_node: dict[str, int] = {}
    for n, _ in ranks:
        per_node[n.label] = per_node.get(n.label, 0) + 1
    oj = opts.to_json()
    refs = {a.run.remote(oj, r, len(ranks), n0.ip, int(port.value), per_node[n.label]): (r, n.node_id)
            for r, (n, a) in enumerate(ranks)}
    return ranks, refs, None


def _observe(run: Any, ranks: list, out: dict[int, Outcome], op: str) -> Observation:
    alive = run.waiter.alive_ids()
    dead, errors, timed_out = [], [], False
    for r, oc in sorted(out.items()):
        n = ranks[r][0]
        if oc.ok or oc.aborted:
            continue
        if oc.node_dead or n.node_id not in alive:
            n.fail("dead", "isolate", oc.error or "")
            dead.append(n.label)
        timed_out |= oc.timed_out
        errors.append(f"rank {r} on {n.label}: {oc.error}")
    if dead or errors:
        return Observation(None, error="; ".join(errors)[:600], timed_out=timed_out and not dead,
                           dead=tuple(dict.fromkeys(dead)))
    r0 = out.get(0)
    ev = r0.value.get("evidence") if r0 is not None and isinstance(r0.value, dict) else None
    recs = [r for r in (ev or {}).get("records") or [] if r.get("op") == op]
    if not recs:
        said = [" | ".join(oc.value.get("stderr_tail") or []) for _, oc in sorted(out.items())
                if oc.ok and isinstance(oc.value, dict) and oc.value.get("stderr_tail")]
        return Observation(None, error="rank 0 returned no record" + (f": {said[0][:300]}" if said else ""))
    wrong = sum(int(r.get("wrong") or 0) for r in recs)
    if wrong:
        return Observation(None, error=f"{wrong} wrong element(s) in the {op} results (a corrupting link or NIC)")
    top = max(recs, key=lambda r: (r["bytes"], r["busbw"]))
    return Observation(float(top["busbw"]))


def _conclude(run: Any, ray: Any, planner: Planner, policy: Policy, bound: float, t_start: float) -> None:
    o, io = run.o, run.o.isolate
    v = planner.verdict()
    when = _utc(time.time())
    evidence = str(o.out_dir / "cluster.json")
    by_label = {n.label: n for n in run.nodes}
    kinds = {**{k: "bad" for k in v.bad}, **{k: "straggler" for k in v.stragglers}}
    new_q = {l: qmod.entry(by_label[l], why, kinds[l], when, evidence) for l, why in v.quarantine.items()}
    released = {l for l in v.cleared if l not in v.flaky}
    supported, label_note = qmod.ray_labels_support(ray)
    applied = not io.quarantine_only
    current = qmod.load(io.quarantine_file)
    if applied:
        qmod.save(io.quarantine_file, qmod.merge(current, new_q, released & set(current)))
    for l in sorted(new_q):
        say(f"isolate: {'quarantined' if applied else 'would quarantine'} {l} ({kinds[l]}): {new_q[l]['reason'][:200]}")
    # the validated index: the nodes that passed now, and no record for those that failed
    for l in released:
        vmod.write(io.validated_dir, l, {"node_id": by_label[l].node_id, "time": when, "epoch": time.time(),
                                         "evidence": evidence})
    for l in v.quarantine:
        vmod.drop(io.validated_dir, l)
    data = v.to_dict()
    data.update({
        "policy": dataclasses.asdict(policy), "op": io.op, "sizes": list(io.sizes), "measure_timeout": bound,
        "groups": [list(g) for g in planner.groups],
        "quarantine_file": str(io.quarantine_file), "quarantine_applied": applied,
        "ray_labels": {"supported": supported, "note": label_note},
        "quarantined_before": io.quarantined, "skipped_validated": io.skipped,
        "quarantined": [dict(new_q[l], node=l) for l in sorted(new_q)],
        "released": sorted(released & set(current)), "duration_s": round(time.time() - t_start, 3),
    })
    run.context["isolate"] = data
    st = Status.FAIL if (v.quarantine or v.bad_links or v.unjudged or v.fleet) else (
        Status.WARN if v.flaky or v.unexplained else Status.PASS)
    parts = [f"{len(v.cleared)} of {len(v.cleared) + len(v.quarantine) + len(v.unjudged)} node(s) cleared in "
             f"{v.measurements} measurement(s) over {v.rounds} round(s)"]
    if v.fleet:
        parts.append(v.fleet)
    parts += [f"bad {l}: {why}" for l, why in sorted(v.bad.items())[:4]]
    parts += [f"straggler {l}: {why}" for l, why in sorted(v.stragglers.items())[:4]]
    parts += [f"bad link {a} <-> {b}: {why}" for (a, b), why in sorted(v.bad_links.items())[:4]]
    parts += [f"not judged {l}: {why}" for l, why in sorted(v.unjudged.items())[:4]]
    parts += [f"flaky {l}: {why}" for l, why in sorted(v.flaky.items())[:2]]
    parts += [f"transient: {u}" for u in v.unexplained[:2]]
    if io.quarantined or io.skipped:
        parts.append(f"left out: {len(io.quarantined)} quarantined before, {len(io.skipped)} validated recently")
    remedy = ""
    if v.quarantine:
        remedy = (("quarantined (recorded in " if applied else "would be quarantined (--quarantine-only: nothing "
                   "recorded; list ") + f"{io.quarantine_file}): drain those nodes, fix them and rerun with "
                  "--include-quarantined to release them; " + label_note)
    elif v.bad_links:
        remedy = "a link fails only between these two nodes: check the cable/port/switch path between them; " \
                 "'rdmacheck cluster --pairwise' on the two confirms it"
    elif v.fleet:
        remedy = "check the profile's min_busbw (--expect-busbw) and the fabric settings every node shares"
    elif v.unjudged:
        remedy = "no node passed to compare against: add a node known to be good, or run --pairwise"
    run.results.append(Result("cluster.isolate", st, observed="; ".join(parts),
                              expected=f"every node's group reaches the floor ({policy.floor:g} GB/s) and "
                                       f"{policy.straggler_factor:g} x the fleet median"
                              if policy.floor is not None else
                              f"every node's group reaches {policy.straggler_factor:g} x the fleet median",
                              remedy=remedy,
                              details={"quarantine": v.quarantine, "measurements": v.measurements, "rounds": v.rounds}))
    # one isolate verdict per measured node, so the report's node table names it with the reason
    for l in sorted(set(v.cleared) | set(v.quarantine) | set(v.unjudged) | set(v.flaky)):
        n = by_label.get(l)
        if n is None:
            continue
        if l in v.quarantine:
            r = Result("cluster.isolate", Status.FAIL, observed=f"{kinds[l]}: {v.quarantine[l]}",
                       expected="its group passes, and it passes beside a cleared node",
                       remedy=("quarantined" if applied else "would be quarantined")
                       + f" ({qmod.LABEL_KEY}={qmod.LABEL_VALUE}, {when})")
        elif l in v.unjudged:
            r = Result("cluster.isolate", Status.FAIL, observed=f"not judged: {v.unjudged[l]}",
                       expected="its group passes, or it passes beside a cleared node")
        elif l in v.flaky:
            r = Result("cluster.isolate", Status.WARN, observed=f"flaky: {v.flaky[l]}",
                       expected="passes every confirmation", remedy="rerun --isolate; a repeat names it")
        else:
            r = Result("cluster.isolate", Status.PASS, observed="cleared: its group passed",
                       expected="its group passes")
        ev = Evidence(kind="cluster", host=l, results=[r], context={"isolate": {"node_id": n.node_id}})
        path = o.out_dir / "nodes" / safe_name(l) / "isolate.json"
        atomic_write(path, ev.to_json() + "\n")
        n.files.append(str(path.relative_to(o.out_dir)))
