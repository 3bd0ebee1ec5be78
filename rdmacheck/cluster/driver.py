"""``rdmacheck cluster``: Ray nodes -> per-node preflight -> cluster bench -> pairwise -> evidence -> report.

Every wait on a node is bounded.  A node that dies or never answers is
recorded with the Ray error (or "no answer within S s") and the run goes on
without it; the evidence and the report are always written.

Where time goes and why it is bounded:

* preflight: one task per node pinned with NodeAffinitySchedulingStrategy
  (soft=False: a task must never run on another node, or one node's gates
  would be reported twice under two names); the whole phase is bounded by
  --node-timeout.
* bench and pairwise: the ranks run rdmacheck.bench's runner, whose watchdog
  ends a rank that makes no progress for --node-timeout seconds; the driver
  polls Ray's node table every second, so a node Ray declares dead is
  named at once, and after the first rank of a group finishes (or fails) the
  others get --node-timeout + a grace to answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rdmacheck.util.atomic import atomic_write
from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.schema import parse
from ..output.heatmap import heatmap_svg
from rdmacheck.evidence.model import Evidence, Result, Status
from . import matrix, remote
from .nodes import GRACE_S, Node, Outcome, safe_name, say  # noqa: F401  (shared with isolate_run)
from .schedule import rounds

# Observers of the run's progress: each is called with the phase the driver has reached
# ("preflight", "bench", "pairwise-round-N") before the phase's tasks start, in the driver process.
# A tool embedding the driver (or a test, tests/fault_hooks.py, which removes a Ray node at a known
# point) appends to it; an observer that raises ends the run like any driver error.
PHASE_HOOKS: list[Callable[[str], None]] = []
POLL_S = 1.0            # how often Ray's node table is read while waiting


@dataclasses.dataclass
class ClusterOptions:
    address: str
    out_dir: Path
    config: Any                                   # rdmacheck.config.Config, loaded on the driver
    bench_opts: Any                               # rdmacheck.bench.runner.BenchOptions (template for the cluster bench)
    node_timeout: float = 120.0
    preflight: bool = True
    only: list[str] | None = None
    bench: bool = True
    pairwise: bool = False
    pairwise_sizes: list[int] = dataclasses.field(default_factory=lambda: [64 << 20])
    outlier_factor: float = 0.5
    report: bool = True
    title: str | None = None
    argv: list[str] = dataclasses.field(default_factory=list)
    isolate: Any = None                           # cluster.isolate_run.IsolateOptions for --isolate


def ray_error_text(e: BaseException, limit: int = 500) -> str:
    """A Ray exception in one line: its type and the informative part of its text."""
    # Ray's actor errors list class_name/actor_id/pid/namespace/ip on their own lines: ids a
    # reader cannot use; the sentences around them say what happened
    noise = ("class_name:", "actor_id:", "pid:", "namespace:", "ip:")
    text = " | ".join(line.strip() for line in str(e).splitlines() if line.strip() and not line.strip().startswith(noise))
    text = text.replace("\t", " ")
    out = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _phase(phase: str) -> None:
    for hook in PHASE_HOOKS:
        hook(phase)


# ---------------------------------------------------------------- connecting

CONNECT_TIMEOUT_S = 30.0
_CONNECT_HELP = ("start Ray on the head (the head container does) and pass its GCS address HOST:6379, "
                 "or 'auto' on a node where Ray runs")


def probe_gcs(address: str, timeout: float) -> None:
    """TCP-connect to HOST:PORT first: ray.init retries an unreachable GCS for minutes."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise UsageError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); {_CONNECT_HELP}") from None


def connect(ray, address: str, timeout: float) -> None:
    """ray.init, bounded.  Ray has no connect timeout of its own (it waits on the GCS for
    minutes), so a timer ends the process with a one-line error if it has not returned."""
    import threading

    def fire() -> None:
        sys.stderr.write(f"rdmacheck: error: --ray-address {address}: no Ray cluster answered within {timeout:g} s; "
                         f"{_CONNECT_HELP}\n")
        sys.stderr.flush()
        os._exit(2)

    t = threading.Timer(timeout, fire)
    t.daemon = True
    t.start()
    try:
        ray.init(address=address, log_to_driver=False, logging_level="warning")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"--ray-address {address}: cannot connect to a Ray cluster ({ray_error_text(e, 300)}); "
                         f"{_CONNECT_HELP}") from None
    finally:
        t.cancel()


# ---------------------------------------------------------------- discovery

def label_nodes(raw: list[dict[str, Any]]) -> list[Node]:
    """Ray's node table -> Nodes with unique, readable labels, in a stable order.

    The label is the host name where it is unique.  Several Ray nodes on one
    host (containers sharing the host's name, or CI's simulated nodes) get
    ``host/node_name`` (``host/<NodeID prefix>`` without a node name).
    """
    alive = [n for n in raw if n.get("Alive")]
    hosts = [str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "?") for n in alive]
    nodes: list[Node] = []
    for n, host in zip(alive, hosts):
        nid = str(n["NodeID"])
        name = str(n.get("NodeName") or "")
        ip = str(n.get("NodeManagerAddress") or "")
        label = host
        if hosts.count(host) > 1:
            label = f"{host}/{name}" if name and name != ip else f"{host}/{nid[:8]}"
        res = {str(k): float(v) for k, v in (n.get("Resources") or {}).items()}
        nodes.append(Node(nid, label, host, ip, name, int(res.get("GPU", 0)), res))
    seen: dict[str, int] = {}
    for nd in nodes:  # still ambiguous (same node_name twice): add the NodeID prefix
        seen[nd.label] = seen.get(nd.label, 0) + 1
    for nd in nodes:
        if seen[nd.label] > 1:
            nd.label = f"{nd.label}/{nd.node_id[:8]}"
    return sorted(nodes, key=lambda x: x.label)


# ---------------------------------------------------------------- bounded waiting

class Waiter:
    def __init__(self, ray, nodes: dict[str, Node]) -> None:
        self.ray = ray
        self.nodes = nodes          # node_id -> Node

    def alive_ids(self) -> set[str]:
        try:
            return {n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}
        except Exception:
            return set(self.nodes)

    def wait(self, refs: dict[Any, tuple[Any, str]], bound: float, hard: bool,
             abort_if_dead: bool = False) -> dict[Any, Outcome]:
        """Wait for ``refs`` (ref -> (key, node_id)).

        hard: everything must answer within ``bound`` seconds from now.
        not hard: no limit while all are running; once one has finished or
        failed, the rest get ``bound`` more seconds (the rank watchdog ends a
        stuck rank within --node-timeout).  A ref whose node leaves Ray's
        table is failed once Ray has had 5 s to deliver its own error.
        abort_if_dead: the refs are ranks of one collective group, which cannot
        finish without every rank: once one rank's node is dead, the others are
        given up at once (the caller kills their actors) instead of waiting
        for their watchdogs.
        """
        ray = self.ray
        out: dict[Any, Outcome] = {}
        pending = dict(refs)
        start = time.monotonic()
        first_done: float | None = None
        dead_seen: dict[str, float] = {}
        last_poll = 0.0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                key, nid = pending.pop(ref)
                try:
                    out[key] = Outcome(True, ray.get(ref))
                except Exception as e:  # RayActorError, NodeDiedError, TaskUnschedulableError, RayTaskError ...
                    txt = ray_error_text(e)
                    dead = "node has died" in txt or "Node Id" in txt and "died" in txt or isinstance(
                        e, getattr(ray.exceptions, "NodeDiedError", ())) or "TaskUnschedulable" in type(e).__name__
                    out[key] = Outcome(False, error=txt, node_dead=dead)
                if first_done is None:
                    first_done = time.monotonic()
            if pending and abort_if_dead and any(oc.node_dead for oc in out.values()):
                for ref, (key, nid) in pending.items():
                    out[key] = Outcome(False, error="given up: a peer rank's node died, the group cannot finish",
                                       aborted=True)
                break
            if not pending:
                break
            now = time.monotonic()
            if now - last_poll >= POLL_S:
                last_poll = now
                alive = self.alive_ids()
                for ref, (key, nid) in list(pending.items()):
                    if nid not in alive:
                        t = dead_seen.setdefault(nid, now)
                        if now - t > 5.0:  # Ray had its chance to say why
                            pending.pop(ref)
                            out[key] = Outcome(False, error=f"Ray reports node {nid[:12]} dead (its task never answered)",
                                               node_dead=True)
            limit = start + bound if hard else (first_done + bound if first_done is not None else None)
            if limit is not None and time.monotonic() > limit:
                for ref, (key, nid) in pending.items():
                    out[key] = Outcome(False, error=f"no answer within {bound:g} s (the node is overloaded, "
                                                    f"partitioned or stuck; Ray did not report it dead)", timed_out=True)
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:
                        pass
                break
        return out


# ---------------------------------------------------------------- the run

class ClusterRun:
    def __init__(self, opts: ClusterOptions) -> None:
        self.o = opts
        self.nodes: list[Node] = []
        self.results: list[Result] = []
        self.context: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.actors: dict[str, list[Any]] = {}      # node label -> actors (one per GPU, or one)
        self.bench_evidence: Evidence | None = None
        self.pairwise: dict[str, Any] | None = None
        self.backend: str = "gloo"
        self.stale: set[tuple[str, int]] = set()     # (label, index) of actors to replace before use
        self.exclude: set[str] = set()               # labels that get no rank actor (--isolate: quarantined, validated)

    # -- helpers
    def by_id(self) -> dict[str, Node]:
        return {n.node_id: n for n in self.nodes}

    def node(self, label: str) -> Node:
        return next(n for n in self.nodes if n.label == label)

    def _strategy(self, node: Node):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)

    def _timed(self, phase: str, fn: Callable[[], None]) -> None:
        """Run one phase; an unexpected error ends that phase, named, never the run:
        the evidence and the report are still written."""
        t0 = time.monotonic()
        try:
            fn()
        except UsageError:
            raise
        except Exception as e:
            txt = ray_error_text(e)
            say(f"{phase}: driver error: {txt}")
            self.results.append(Result(f"cluster.{phase}", Status.FAIL, observed=f"driver error: {txt}",
                                       expected=f"the {phase} phase completes",
                                       remedy="a bug in rdmacheck or an unexpected Ray state: report it with cluster.json"))
        finally:
            self.timings[phase] = round(time.monotonic() - t0, 3)

    # -- main
    def run(self) -> dict[str, Any]:
        o = self.o
        if o.address != "auto" and "ray" not in sys.modules:
            probe_gcs(o.address, min(o.node_timeout, 10.0))  # before paying for `import ray`
        import ray

        o.out_dir.mkdir(parents=True, exist_ok=True)
        own_init = not ray.is_initialized()
        t0 = time.monotonic()
        if own_init:
            connect(ray, o.address, min(o.node_timeout, CONNECT_TIMEOUT_S))
        self.timings["connect"] = round(time.monotonic() - t0, 3)
        try:
            self.nodes = label_nodes(ray.nodes())
            if not self.nodes:
                raise UsageError(f"--ray-address {o.address}: the Ray cluster has no live node")
            say(f"{len(self.nodes)} Ray node(s): " + ", ".join(f"{n.label} ({n.ip}, {n.gpus} GPU)" for n in self.nodes))
            self.waiter = Waiter(ray, self.by_id())
            if o.isolate is not None:  # quarantined and recently validated nodes get no rank actor
                from . import isolate_run

                isolate_run.excluded(o.isolate, [n.label for n in self.nodes], time.time())
                self.exclude = set(o.isolate.quarantined) | set(o.isolate.skipped)
            if o.preflight:
                _phase("preflight")
                self._timed("preflight", lambda: self.phase_preflight(ray))
            if o.bench or o.pairwise or o.isolate is not None:
                self._timed("actors", lambda: self.start_actors(ray))
            if o.bench:
                _phase("bench")
                self._timed("bench", lambda: self.phase_bench(ray))
            if o.isolate is not None:
                self._timed("isolate", lambda: isolate_run.phase(self, ray))
            if o.pairwise:
                self._timed("pairwise", lambda: self.phase_pairwise(ray))
        finally:
            for acts in self.actors.values():
                for a in acts:
                    try:
                        ray.kill(a)
                    except Exception:
                        pass
            if own_init:
                ray.shutdown()
        return self.finish()

    # -- preflight
    def phase_preflight(self, ray) -> None:
        o = self.o
        task = ray.remote(num_cpus=0, max_retries=0)(remote.preflight_task)
        refs = {}
        for n in self.nodes:
            ident = {"node_id": n.node_id, "node_name": n.name, "node_ip": n.ip, "label": n.label}
            ref = task.options(scheduling_strategy=self._strategy(n), name=f"rdmacheck-preflight:{n.label}").remote(
                o.config, o.only, n.label, ident)
            refs[ref] = (n.label, n.node_id)
        say(f"preflight: {len(refs)} task(s), one pinned per node, bounded by {o.node_timeout:g} s")
        out = self.waiter.wait(refs, o.node_timeout, hard=True)
        for n in self.nodes:
            oc = out[n.label]
            if not oc.ok:
                n.fail(oc.state, "preflight", oc.error or "")
                say(f"preflight: {n.label}: {oc.error}")
                continue
            path = o.out_dir / "nodes" / safe_name(n.label) / "preflight.json"
            atomic_write(path, json.dumps(oc.value, indent=2, default=str) + "\n")
            n.files.append(str(path.relative_to(o.out_dir)))
            st = oc.value.get("status")
            say(f"preflight: {n.label}: {st}")

    # -- actors
    def start_actors(self, ray) -> None:
        o = self.o
        live = [n for n in self.nodes if n.ok and n.label not in self.exclude]
        want = o.bench_opts.backend
        all_gpu = bool(live) and all(n.gpus >= 1 for n in live)
        if want == "nccl" and not all_gpu:
            no = [n.label for n in live if n.gpus < 1]
            raise UsageError(f"--backend nccl: node(s) {', '.join(no[:5])} have no GPU in Ray's resources; "
                             "use --backend gloo or start those nodes with their GPUs")
        self.backend = want or ("nccl" if all_gpu else "gloo")
        Actor = ray.remote(remote.BenchActor)
        refs = {}
        for n in live:
            per = n.gpus if self.backend == "nccl" else 1
            acts = []
            for g in range(per):
                a = Actor.options(num_cpus=0, num_gpus=1 if self.backend == "nccl" else 0, max_restarts=0,
                                  scheduling_strategy=self._strategy(n), name=None).remote(n.label)
                acts.append(a)
                refs[a.prepare.remote()] = ((n.label, g), n.node_id)
            self.actors[n.label] = acts
        say(f"bench: starting {len(refs)} rank actor(s), backend {self.backend}"
            + (" (one per GPU)" if self.backend == "nccl" else " (one per node)"))
        out = self.waiter.wait(refs, o.node_timeout + GRACE_S, hard=True)
        self.actor_info: dict[tuple[str, int], dict[str, Any]] = {}
        for (label, g), oc in out.items():
            n = self.node(label)
            if oc.ok:
                self.actor_info[(label, g)] = oc.value
            else:
                err = oc.error or ""
                if oc.timed_out and self.backend == "nccl":
                    err += ("; a GPU actor also waits forever when the node's GPUs are held by another Ray job "
                            "(e.g. vLLM): run acceptance before serving")
                n.fail(oc.state, "bench: actor start", err)
                say(f"bench: {label}: actor did not start: {oc.error}")
        for n in self.nodes:
            if not n.ok:
                self.actors.pop(n.label, None)

    def _retire(self, ray, ranks: list[tuple[Node, Any]], out: dict[int, Outcome]) -> None:
        """Every rank that did not return is killed and marked stale: it may sit in a dead
        rendezvous or have exited on its watchdog.  Its node did nothing wrong; a fresh
        actor replaces it before its next group."""
        for r, oc in out.items():
            if oc.ok:
                continue
            n, a = ranks[r]
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
            acts = self.actors.get(n.label) or []
            g = next((i for i, x in enumerate(acts) if x is a), None)
            if g is not None:
                self.stale.add((n.label, g))

    def _refresh_all(self, ray) -> None:
        """Replace every stale actor of a live node at once (each imports torch: seconds)."""
        todo = [(self.node(l), g) for l, g in sorted(self.stale) if self.node(l).ok]
        self.stale.clear()
        if not todo:
            return
        say(f"replacing {len(todo)} rank actor(s) whose last group did not finish: "
            + ", ".join(n.label for n, _ in todo[:8]) + (" ..." if len(todo) > 8 else ""))
        Actor = ray.remote(remote.BenchActor)
        refs = {}
        for n, g in todo:
            a = Actor.options(num_cpus=0, num_gpus=1 if self.backend == "nccl" else 0, max_restarts=0,
                              scheduling_strategy=self._strategy(n)).remote(n.label)
            self.actors[n.label][g] = a
            refs[a.prepare.remote()] = ((n.label, g), n.node_id)
        out = self.waiter.wait(refs, self.o.node_timeout + GRACE_S, hard=True)
        for (label, g), oc in out.items():
            if not oc.ok:
                self.node(label).fail(oc.state, "actor restart", oc.error or "")

    def _fresh(self, ray, n: Node, g: int = 0) -> bool:
        if (n.label, g) not in self.stale:
            return True
        self.stale.discard((n.label, g))
        say(f"{n.label}: replacing rank actor {g} (its last group did not finish)")
        return self._replace_actor(ray, n, g)

    def _replace_actor(self, ray, n: Node, g: int = 0) -> bool:
        Actor = ray.remote(remote.BenchActor)
        a = Actor.options(num_cpus=0, num_gpus=1 if self.backend == "nccl" else 0, max_restarts=0,
                          scheduling_strategy=self._strategy(n)).remote(n.label)
        out = self.waiter.wait({a.prepare.remote(): ("x", n.node_id)}, self.o.node_timeout + GRACE_S, hard=True)
        if out["x"].ok:
            self.actors[n.label][g] = a
            return True
        n.fail(out["x"].state, "pairwise: actor restart", out["x"].error or "")
        return False

    def _group(self, ray, ranks: list[tuple[Node, Any]], opts) -> tuple[dict[int, Outcome], str | None]:
        """Run one torch.distributed group (rank order as given) through the bench runner."""
        o = self.o
        n0, a0 = ranks[0]
        port = self.waiter.wait({a0.free_port.remote(): ("port", n0.node_id)}, o.node_timeout, hard=True)["port"]
        if not port.ok:
            self._blame(ranks, {0: port}, "bench")
            self._retire(ray, ranks, {0: port})
            return {0: port}, f"rank 0 on {n0.label} could not pick a port: " + (port.error or "")
        master = n0.ip
        opts_json = opts.to_json()
        per_node: dict[str, int] = {}
        for n, _ in ranks:
            per_node[n.label] = per_node.get(n.label, 0) + 1
        refs = {a.run.remote(opts_json, r, len(ranks), master, int(port.value), per_node[n.label]): (r, n.node_id)
                for r, (n, a) in enumerate(ranks)}
        out = self.waiter.wait(refs, o.node_timeout + GRACE_S, hard=False, abort_if_dead=True)
        self._retire(ray, ranks, out)
        return out, None

    def _blame(self, ranks: list[tuple[Node, Any]], out: dict[int, Outcome], phase: str) -> list[str]:
        """Nodes whose rank failed because the node itself went away; returns every failure text."""
        texts = []
        given_up = []
        alive = self.waiter.alive_ids()
        for r, oc in sorted(out.items()):
            n = ranks[r][0]
            if oc.ok:
                continue
            if oc.aborted:
                given_up.append(f"{r} ({n.label})")
                continue
            texts.append(f"rank {r} on {n.label}: {oc.error}")
            if oc.node_dead or n.node_id not in alive:
                n.fail("dead", phase, oc.error or "")
            elif oc.timed_out:
                n.fail("lost", phase, oc.error or "")
        if given_up:  # collateral: named after the cause
            texts.append(f"rank(s) {', '.join(given_up[:8])}{' ...' if len(given_up) > 8 else ''} given up: "
                         "the group cannot finish without the dead rank")
        return texts

    # -- bench
    def phase_bench(self, ray) -> None:
        o = self.o
        ranks = [(n, a) for n in self.nodes if n.ok for a in self.actors.get(n.label, [])]
        if len(ranks) < 1:
            self.results.append(Result("cluster.bench", Status.FAIL, observed="no live rank to run the bench on",
                                       expected="one rank per GPU (NCCL) or per node (gloo)"))
            return
        opts = dataclasses.replace(o.bench_opts, backend=self.backend, timeout=o.node_timeout, json_path=None, csv_path=None,
                                   progress=False)
        say(f"bench: {', '.join(opts.ops)} over {len(ranks)} rank(s), {self.backend}")
        out, err = self._group(ray, ranks, opts)
        failures = self._blame(ranks, out, "bench") if not err else [err]
        self.context["bench"] = {"backend": self.backend, "world_size": len(ranks),
                                 "ranks": [{"rank": r, "node": n.label} for r, (n, _) in enumerate(ranks)],
                                 "failures": failures}
        r0 = out.get(0)
        ev_dict = r0.value.get("evidence") if r0 is not None and r0.ok and isinstance(r0.value, dict) else None
        if ev_dict:
            ev = parse(ev_dict, f"rank 0's bench evidence (on {ranks[0][0].label})")
            ev.host = ranks[0][0].label
            ev.context["cluster"] = {"nodes": [n.label for n, _ in ranks], "ray_address": o.address}
            path = o.out_dir / "bench.json"
            from rdmacheck.evidence.jsonout import write_evidence

            write_evidence(ev, path)
            self.bench_evidence = ev
            self.context["bench"]["file"] = "bench.json"
        rcs = {r: (oc.value.get("rc") if oc.ok else None) for r, oc in out.items()}
        if not ev_dict and not failures:
            # every rank answered but rank 0 wrote nothing: the runner refused (exit 2) or failed early
            said = {r: oc.value.get("stderr_tail") for r, oc in out.items() if oc.ok and oc.value.get("stderr_tail")}
            failures = [f"rank {r} on {ranks[r][0].label} exited {rcs.get(r)}: {' | '.join(t)}" for r, t in sorted(said.items())][:4] \
                or [f"rank 0 returned no evidence (exit codes {rcs})"]
        if failures or not ev_dict:
            self.results.append(Result(
                "cluster.bench", Status.FAIL,
                observed=("; ".join(failures[:4]) + (f" and {len(failures) - 4} more" if len(failures) > 4 else ""))
                or "rank 0 returned no evidence",
                expected=f"every rank of the {self.backend} group finishes the sweep",
                remedy=("the node named dead left the Ray cluster (crash, reboot, network): fix or drain it and rerun; "
                        "ranks given up only because a peer died are collateral")
                if any(not n.ok for n, _ in ranks) else
                "read the rank's message above; 'rdmacheck bench' on that node (or two nodes with torchrun) reproduces it",
                details={"rc": rcs}))
            say("bench: FAILED: " + "; ".join(failures[:3]))
        else:
            st = ev.status
            self.results.append(Result(
                "cluster.bench", Status.PASS if st is not Status.FAIL else Status.FAIL,
                observed=f"{len(ranks)} rank(s) finished; bench gates: "
                         + ", ".join(f"{r.id} {r.status.value}" for r in ev.results),
                expected=f"every rank of the {self.backend} group finishes the sweep and the bench gates pass",
                remedy="see the bench gates in bench.json / the report's bench section" if st is Status.FAIL else "",
                details={"rc": rcs}))
            say(f"bench: {ev.status.value}")

    # -- pairwise
    def phase_pairwise(self, ray) -> None:
        o = self.o
        labels = [n.label for n in self.nodes]
        idx = {l: i for i, l in enumerate(labels)}
        bw = matrix.empty(labels)
        errors: dict[str, str] = {}
        pairs_out: list[dict[str, Any]] = []
        sched = rounds(labels)
        expected = o.bench_opts.expect_busbw
        opts = dataclasses.replace(o.bench_opts, ops=["sendrecv"], sizes=list(o.pairwise_sizes), backend=self.backend,
                                   timeout=o.node_timeout, json_path=None, csv_path=None, progress=False,
                                   plateau_min_bytes=min(o.pairwise_sizes))
        say(f"pairwise: {len(labels) * (len(labels) - 1) // 2} pair(s) in {len(sched)} round(s) "
            f"(each node in at most one pair per round)")
        self._refresh_all(ray)
        for k, rnd in enumerate(sched, 1):
            _phase(f"pairwise-round-{k}")
            groups = []
            for a, b in rnd:
                key = f"{a}|{b}"
                na, nb = self.node(a), self.node(b)
                bad = [x for x in (na, nb) if not x.ok]
                if bad:
                    errors[key] = "; ".join(f"{x.label} {x.state} since {x.phase} (see cluster.nodes)" for x in bad)
                    continue
                if not all(self.actors.get(x.label) for x in (na, nb)):
                    errors[key] = "no rank actor"
                    continue
                if not (self._fresh(ray, na) and self._fresh(ray, nb)):
                    errors[key] = "; ".join(f"{x.label} {x.state} since {x.phase} (see cluster.nodes)" for x in (na, nb)
                                            if not x.ok) or "rank actor could not be replaced"
                    continue
                groups.append((key, na, nb))
            # the pairs of one round run at the same time: that is the point of rounds
            running = []
            for key, na, nb in groups:
                running.append((key, na, nb, self._start_pair(ray, na, nb, opts)))
            for key, na, nb, started in running:
                ranks, refs, err = started
                if err:
                    errors[key] = err
                    continue
                out = self.waiter.wait(refs, o.node_timeout + GRACE_S, hard=False, abort_if_dead=True)
                self._retire(ray, ranks, out)
                fails = self._blame(ranks, out, f"pairwise round {k}")
                rec = self._pair_record(out)
                if rec is not None and not fails:
                    i, j = idx[na.label], idx[nb.label]
                    bw[i][j] = bw[j][i] = rec["busbw"]
                    if rec.get("wrong"):
                        errors[key] = f"#wrong {rec['wrong']}"
                    pairs_out.append(dict(rec, a=na.label, b=nb.label, round=k))
                    say(f"pairwise round {k}: {na.label} <-> {nb.label}: {rec['busbw']:.2f} GB/s")
                else:
                    said = [f"rank {r}: {' | '.join(oc.value.get('stderr_tail') or [])}" for r, oc in sorted(out.items())
                            if oc.ok and isinstance(oc.value, dict) and oc.value.get("stderr_tail")]
                    errors[key] = "; ".join(fails) or "; ".join(said)[:500] or "rank 0 returned no record"
                    say(f"pairwise round {k}: {na.label} <-> {nb.label}: FAILED: {errors[key][:200]}")
        # a value with #wrong is not a link we can trust: count it as not measured
        for key, why in errors.items():
            if why.startswith("#wrong"):
                a, b = key.split("|")
                bw[idx[a]][idx[b]] = bw[idx[b]][idx[a]] = None
        data, res = matrix.judge(labels, bw, errors, expected, o.outlier_factor)
        data["rounds"] = [[list(p) for p in r] for r in sched]
        data["sizes"] = list(o.pairwise_sizes)
        data["records"] = pairs_out
        self.pairwise = data
        self.results.append(res)
        atomic_write(o.out_dir / "pairwise.csv", matrix.to_csv(labels, bw))
        atomic_write(o.out_dir / "pairwise.svg", heatmap_svg(data))

    def _start_pair(self, ray, na: Node, nb: Node, opts):
        ranks = [(na, self.actors[na.label][0]), (nb, self.actors[nb.label][0])]
        port = self.waiter.wait({ranks[0][1].free_port.remote(): ("port", na.node_id)}, self.o.node_timeout, hard=True)["port"]
        if not port.ok:
            self._blame(ranks, {0: port}, "pairwise")
            self._retire(ray, ranks, {0: port})
            return ranks, {}, f"rank 0 on {na.label} could not pick a port: {port.error}"
        oj = opts.to_json()
        refs = {a.run.remote(oj, r, 2, na.ip, int(port.value), 1): (r, n.node_id) for r, (n, a) in enumerate(ranks)}
        return ranks, refs, None

    @staticmethod
    def _pair_record(out: dict[int, Outcome]) -> dict[str, Any] | None:
        r0 = out.get(0)
        if r0 is None or not r0.ok or not isinstance(r0.value, dict) or not r0.value.get("evidence"):
            return None
        recs = [r for r in r0.value["evidence"].get("records") or [] if r.get("op") == "sendrecv"]
        if not recs:
            return None
        top = max(recs, key=lambda r: (r["bytes"], r["busbw"]))
        return {"bytes": top["bytes"], "busbw": float(top["busbw"]), "time_us": top["time_us"],
                "wrong": sum(int(r.get("wrong") or 0) for r in recs),
                "all": [{"bytes": r["bytes"], "busbw": r["busbw"]} for r in recs]}

    # -- evidence and report
    def finish(self) -> dict[str, Any]:
        o = self.o
        import ray

        dead = [n for n in self.nodes if not n.ok]
        total = len(self.nodes)
        if dead:
            nodes_res = Result(
                "cluster.nodes", Status.FAIL,
                observed=f"{total - len(dead)} of {total} node(s) answered; "
                         + "; ".join(f"{n.label} {n.state} during {n.phase}: {n.error}" for n in dead[:4])
                         + (f" and {len(dead) - 4} more" if len(dead) > 4 else ""),
                expected=f"every Ray node answers within {o.node_timeout:g} s",
                remedy="a node Ray reports dead left the cluster (crash, reboot, raylet killed, network): "
                       "check it and rerun; a node with no answer is overloaded or partitioned",
                details={"dead": [n.label for n in dead]})
        else:
            nodes_res = Result("cluster.nodes", Status.PASS, observed=f"all {total} node(s) answered",
                               expected=f"every Ray node answers within {o.node_timeout:g} s")
        results = [nodes_res] + self.results
        if not o.pairwise:
            results.append(Result("cluster.pairwise", Status.SKIP, observed="not requested", remedy="add --pairwise"))
        # one small cluster-kind file per node: a node that died shows up as a failed node of its own
        for n in self.nodes:
            r = Result("cluster.node", Status.PASS if n.ok else Status.FAIL,
                       observed="answered every phase" if n.ok else f"{n.state} during {n.phase}: {n.error}",
                       expected=f"answers Ray within {o.node_timeout:g} s",
                       remedy="" if n.ok else nodes_res.remedy)
            ev = Evidence(kind="cluster", host=n.label, results=[r],
                          context={"ray": {"node_id": n.node_id, "node_name": n.name, "ip": n.ip, "hostname": n.hostname}})
            path = o.out_dir / "nodes" / safe_name(n.label) / "cluster-node.json"
            atomic_write(path, ev.to_json() + "\n")
            n.files.append(str(path.relative_to(o.out_dir)))
        self.context.update({
            "ray_address": o.address, "ray_version": getattr(ray, "__version__", None),
            "driver_host": socket.gethostname(), "node_timeout": o.node_timeout,
            "nodes": [n.to_dict() for n in self.nodes], "timings_s": self.timings, "argv": o.argv,
            "config": o.config.to_dict() if hasattr(o.config, "to_dict") else None,
            "expect_busbw": o.bench_opts.expect_busbw,
        })
        if self.pairwise is not None:
            self.context["pairwise"] = self.pairwise
        ev = Evidence(kind="cluster", host="ray-cluster", results=results, context=self.context)
        from rdmacheck.evidence.jsonout import write_evidence

        write_evidence(ev, o.out_dir / "cluster.json")
        summary = {"evidence": ev, "nodes": self.nodes, "report": None, "verdict": None, "reason": None}
        if o.report:
            t0 = time.monotonic()
            summary.update(write_report(o.out_dir, o.title, o.bench_opts.expect_busbw, self.pairwise))
            self.timings["report"] = round(time.monotonic() - t0, 3)
        return summary


def write_report(out_dir: Path, title: str | None, expected: float | None,
                 pairwise: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report over every evidence file under ``out_dir`` (rdmacheck.report.make_report).

    The report reads cluster.json itself: its gates as "Cluster gates", and
    ``context.pairwise`` as the heatmap (rdmacheck.output.heatmap) with the flagged links.
    pairwise.svg beside it is the same picture for people who want the file.
    """
    from ..report import make_report

    out = out_dir / "report.html"
    model = make_report([str(out_dir)], out, title=title or "Cluster acceptance report (rdmacheck cluster)",
                        expected_busbw=expected)
    return {"report": out, "verdict": model["verdict"], "reason": model["reason"]}
