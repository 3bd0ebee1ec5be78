"""The one runner every collective shares: init, warm up, time, check, record.

It runs inside each rank: under torchrun (RANK/WORLD_SIZE/LOCAL_RANK/
MASTER_ADDR/MASTER_PORT in the environment), under ``--nproc N`` (the
launcher sets the same variables), or alone (world size 1).

Timing, per (op, size, variant):

* warm up, then estimate the time per call from a few calls; all ranks agree
  on the iteration count (the largest estimate wins) so that small sizes run
  thousands of iterations (``--time-per-size``, default 20 ms) and 1 GiB runs
  the nccl-tests default of 20;
* GPU: CUDA events around the timed loop; with ``--graph`` (default on for
  NCCL) the loop is captured in a CUDA graph and replayed, so per-call Python
  and launch overhead (about 20 us in torch.distributed) leaves the numbers;
* CPU: ``time.perf_counter`` around the loop after a barrier;
* the time reported is the MAX over ranks of each rank's mean time per call,
  so a slow rank is never averaged away;
* ``--check``: refill deterministic inputs, run once, compare every element
  with the expected result on every rank; #wrong is the sum over ranks.

Robustness: a watchdog thread ends the rank (exit 1) with its rank and phase
when a phase outlasts ``--timeout``; torch.distributed's own timeout is set a
little longer so our message, not a stack trace, comes first.  Rank 0 rewrites
the evidence JSON after every size, so a crash keeps the finished sizes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Evidence, Result, Status, exit_code
from .collectives import COLLECTIVES, DTYPES, SLICE
from .algo import apply_algo, label as algo_label, resolve_algo
from .gate import busbw_gate, check_result, memory_verdict
from .latency import applicable_limits, latency_gate
from .hooks import HOOKS, BenchHooks, RunInfo, load_hook
from .plan import PlanRow, build_plan
from .sizes import human_bytes
from .table import blank_columns_note, compact_header, compact_row, header, row_line, use_compact, write_csv

STATUS_DIR_ENV = "RDMACHECK_BENCH_STATUS_DIR"
# the last phase a rank enters: its results are written, its exit code is its verdict (launch.py)
DONE_PHASE = "finish: destroy process group"


@dataclasses.dataclass
class BenchOptions:
    ops: list[str]
    sizes: list[int]
    dtype: str = "float"
    iters: int | None = None          # None: time-based
    warmup: int = 5
    time_per_size: float = 0.02
    min_iters: int = 20
    max_iters: int = 10000
    graph: bool | None = None         # None: on for NCCL on CUDA
    check: bool = True
    backend: str | None = None        # None: nccl with CUDA, else gloo
    timeout: float = 120.0
    json_path: str | None = None
    csv_path: str | None = None
    expect_busbw: float = 12.0
    expect_explicit: bool = False     # --expect-busbw, or min_busbw in the profile/--expect
    plateau_min_bytes: int = 64 << 20
    max_memory: int | None = None
    hooks: list[str] = dataclasses.field(default_factory=list)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool | None = None      # None: when stderr is a tty
    table: str = "auto"               # auto | compact | nccl-tests (bench/table.py use_compact)
    argv: list[str] = dataclasses.field(default_factory=list)
    algo: str | None = None           # None: ring across nodes, auto on one (bench/algo.py)
    # bench.latency ceilings as (op or None, bytes, us): explicit --expect-latency, and the profile's table
    expect_latency: list | None = None
    latency_profile: list = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "BenchOptions":
        return cls(**json.loads(text))


class RankFailure(Exception):
    """A rank cannot go on; the message names rank and phase."""


# ---------------------------------------------------------------------------------------------
class Watchdog:
    """Ends this rank when a phase outlasts its deadline, naming rank and phase.

    Also publishes the current phase to ``$RDMACHECK_BENCH_STATUS_DIR/rankN``
    so the ``--nproc`` launcher can say where a rank that died was.
    """

    def __init__(self, rank: int, timeout: float, on_fire) -> None:
        self.rank = rank
        self.timeout = timeout
        self.on_fire = on_fire
        self.phase = "start"
        self.timeout_now = timeout
        self.deadline: float | None = None
        self.status_dir = os.environ.get(STATUS_DIR_ENV)
        # heartbeat: this thread touches rankN.beat every tick, also while the main thread waits
        # in a collective; a rank that is stopped or frozen stops touching it, one that waits for
        # a peer does not, so the launcher can name the rank that stopped progressing
        self.beat = Path(self.status_dir) / f"rank{rank}.beat" if self.status_dir else None
        self._touch()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, name="rdmacheck-bench-watchdog", daemon=True)
        self._t.start()

    def enter(self, phase: str, timeout: float | None = None) -> None:
        self.phase = phase
        self.timeout_now = timeout or self.timeout
        self.deadline = time.monotonic() + self.timeout_now
        if self.status_dir:
            p = Path(self.status_dir) / f"rank{self.rank}"
            tmp = p.with_suffix(".tmp")
            try:
                tmp.write_text(phase)
                os.replace(tmp, p)
            except OSError:
                pass

    def stop(self) -> None:
        self.deadline = None
        self._stop.set()

    def _touch(self) -> None:
        if self.beat is not None:
            try:
                self.beat.touch()
            except OSError:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._touch()
            d = self.deadline
            if d is not None and time.monotonic() > d:
                if self.phase.startswith("init: rendezvous"):
                    hint = ("not every rank joined: check the other ranks/nodes were started with the same "
                            "MASTER_ADDR/MASTER_PORT and WORLD_SIZE, and that the port is reachable")
                elif self.phase.startswith("init"):
                    hint = "this rank is stuck starting up (GPU driver, NCCL init or a slow file system)"
                else:
                    hint = "a peer rank is stuck or has died (raise --timeout if the sizes are huge)"
                msg = f"rank {self.rank}: no progress for {self.timeout_now:g} s in phase '{self.phase}'; {hint}"
                try:
                    self.on_fire(msg)
                finally:
                    sys.stderr.write(f"rdmacheck: bench: {msg}\n")
                    sys.stderr.flush()
                    os._exit(1)


# ---------------------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise UsageError(f"environment variable {name}={v!r} is not a whole number (set by torchrun or --nproc)") from None


def detect_memory(torch, device, local_world: int) -> tuple[int, str]:
    """(bytes one rank may allocate, where that number came from).

    GPU: NVML's free memory of this device (torch's mem_get_info when NVML is
    not there).  On unified-memory GPUs (DGX Spark's GB10) NVML reports no
    framebuffer (NotSupported), the GPU allocates system RAM, and running out
    freezes the machine: use psutil's available system memory, shared by the
    ranks of this node.  CPU: the same system-memory share.
    """
    import psutil

    def system_share() -> tuple[int, str]:
        avail = psutil.virtual_memory().available
        return int(avail * 0.9) // max(local_world, 1), f"90% of available system memory / {local_world} local rank(s)"

    if device.type != "cuda":
        return system_share()
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            props = torch.cuda.get_device_properties(device)
            bus = "%08x:%02x:%02x.0" % (getattr(props, "pci_domain_id", 0), props.pci_bus_id, props.pci_device_id)
            h = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(h)
                return int(info.free * 0.95), "95% of NVML free GPU memory"
            except pynvml.NVMLError_NotSupported:
                # unified memory: no framebuffer to report
                return system_share()[0], "unified-memory GPU (NVML reports no memory): " + system_share()[1]
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    free, _total = torch.cuda.mem_get_info(device)
    return int(free * 0.95), "95% of free GPU memory (cudaMemGetInfo)"


def _rank_info(torch, device, rank: int, local_rank: int, mem: tuple[int, str], verdict: str | None) -> dict[str, Any]:
    from rdmacheck.preflight.facts.nodeid import rank_facts
    from rdmacheck.preflight.root import HostRoot

    info: dict[str, Any] = {"rank": rank, "local_rank": local_rank, "host": socket.gethostname(), "pid": os.getpid(),
                            "device": str(device), "memory_limit": mem[0], "memory_source": mem[1], "memory_refusal": verdict}
    info.update(rank_facts())  # the node as NCCL decides it (NCCL_HOSTID, else host name + boot id): facts/nodeid.py
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_bus_id"] = "%08x:%02x:%02x.0" % (getattr(props, "pci_domain_id", 0), props.pci_bus_id, props.pci_device_id)
    hcas = HostRoot("/").listdir("/sys/class/infiniband")
    info["hcas"] = sorted(hcas) if hcas else []
    for k in ("NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_NET_GDR_LEVEL"):
        if os.environ.get(k):
            info.setdefault("env", {})[k] = os.environ[k]
    return info


class _Timer:
    """Mean seconds per call of ``fn`` over ``n`` calls on this rank."""

    def __init__(self, torch, device) -> None:
        self.torch = torch
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def run(self, fn, n: int) -> float:
        if self.cuda:
            t = self.torch
            a, b = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(n):
                fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3 / n
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n


class Runner:
    def __init__(self, opts: BenchOptions, hooks: BenchHooks | None = None) -> None:
        self.opts = opts
        self.hooks = BenchHooks()
        self.hooks.extend(HOOKS)
        if hooks:
            self.hooks.extend(hooks)
        for spec in opts.hooks:
            load_hook(spec, self.hooks)
        self.rank = _env_int("RANK", 0)
        self.world = _env_int("WORLD_SIZE", 1)
        self.local_rank = _env_int("LOCAL_RANK", 0)
        self.local_world = _env_int("LOCAL_WORLD_SIZE", 1)
        self.records: list[dict[str, Any]] = []
        self.context: dict[str, Any] = {}
        self.notes: list[str] = []
        self.plan: list[PlanRow] = []
        self.failure: str | None = None
        self._lock = threading.Lock()
        self.wd = Watchdog(self.rank, opts.timeout, self._abort)

    # -- evidence ------------------------------------------------------------------------------
    def _results(self, complete: bool) -> list[Result]:
        o = self.opts
        limits, source = applicable_limits(o.expect_latency, o.latency_profile, getattr(self, "backend", None) or o.backend or "nccl")
        res = [busbw_gate(self.records, o.expect_busbw, o.plateau_min_bytes, self.world),
               latency_gate(self.records, limits, source, self.world), check_result(self.records, o.check)]
        done = len({(r["op"], r["bytes"]) for r in self.records})
        if self.failure:
            res.append(Result("bench.run", Status.FAIL, observed=self.failure,
                              expected=f"all {len(self.plan)} sizes measured on {self.world} ranks",
                              remedy="see the cause named; the sizes finished before it are kept in the records",
                              details={"finished_sizes": done}))
        elif complete:
            res.append(Result("bench.run", Status.PASS, observed=f"{done} of {len(self.plan)} sizes on {self.world} ranks",
                              expected=f"all {len(self.plan)} sizes measured"))
        else:
            res.append(Result("bench.run", Status.FAIL, observed=f"in progress: {done} of {len(self.plan)} sizes",
                              expected=f"all {len(self.plan)} sizes measured",
                              remedy="the run ended before finishing (killed or crashed); the finished sizes are kept"))
        return res

    def _write(self, complete: bool, extra: list[Result] | None = None) -> list[Result]:
        results = self._results(complete) + list(extra or [])
        if self.rank != 0:
            return results
        with self._lock:
            ctx = dict(self.context, complete=complete and not self.failure)
            if self.opts.json_path:
                from rdmacheck.evidence.jsonout import write_evidence

                write_evidence(Evidence(kind="bench", results=results, context=ctx, records=list(self.records)),
                               self.opts.json_path)
        return results

    def _abort(self, cause: str) -> None:
        """Called from the watchdog thread: keep the finished sizes with the cause."""
        self.failure = cause
        try:
            self._write(complete=False)
        except Exception:
            pass

    # -- main ----------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self._run()
        except UsageError as e:
            # printed by each rank would be noise: rank 0 speaks
            if self.rank == 0:
                print(f"rdmacheck: error: {e}", file=sys.stderr)
            return 2
        except RankFailure as e:
            self.failure = str(e)
            self._write(complete=False)
            print(f"rdmacheck: bench: {e}", file=sys.stderr)
            return 1
        except Exception as e:  # a bug: exit 3 with a crash report, never a traceback per rank
            from rdmacheck.util.crash import report_internal_error

            return report_internal_error(e, self.opts.argv, where=f"bench rank {self.rank}")
        finally:
            self.wd.stop()

    def _run(self) -> int:
        o = self.opts
        # importing torch is local work that can take tens of seconds on a loaded machine: its own bound
        self.wd.enter("init: import torch", timeout=max(o.timeout, 300))
        t_start = time.monotonic()
        import torch
        import torch.distributed as dist

        t_import = time.monotonic()
        backend, device, graph = self._select_backend(torch)
        self._init_process_group(dist, backend, device)
        self.backend = backend  # only once the group is up: until then _results goes by --backend
        t_init = time.monotonic()
        self.plan, self.notes = build_plan(o.ops, o.sizes, o.dtype, self.world)
        if not self.plan:
            raise UsageError("nothing to run: " + "; ".join(self.notes or ["no sizes"]))
        infos = self._gather_rank_facts(torch, dist, device)
        self._record_context(torch, backend, device, graph, infos)
        self.context["wall_s"] = {"import_torch": round(t_import - t_start, 3), "init": round(t_init - t_import, 3)}
        # the context is on disk before the first size, so a crash in the sweep still leaves it
        self._write(complete=False)
        t_sweep = time.monotonic()
        self._sweep(torch, dist, device, graph, infos)
        self.context["wall_s"]["sweep"] = round(time.monotonic() - t_sweep, 3)
        return self._finish(dist, backend)

    # -- phases of _run ----------------------------------------------------------------------------
    def _select_backend(self, torch) -> tuple[str, Any, bool]:
        """Backend, device and graph mode for this rank; sets self.graph_auto and self.algo."""
        o = self.opts
        backend = o.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl" and not torch.cuda.is_available():
            raise UsageError("--backend nccl needs CUDA, and torch sees no GPU; use --backend gloo")
        if backend == "nccl":
            if self.local_rank >= torch.cuda.device_count():
                raise UsageError(f"LOCAL_RANK {self.local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                                 f"start at most {torch.cuda.device_count()} ranks per node")
            torch.cuda.set_device(self.local_rank)
            device = torch.device("cuda", self.local_rank)
        else:
            device = torch.device("cpu")
        # graph: True always, False never, None "auto": on CUDA, sample a captured loop and an
        # eager loop at each size and keep the faster.  Measured on 2x H100 (NCCL 2.28.9): a graph
        # saves ~25 us of torch.distributed launch overhead per call at small sizes, but NCCL's
        # captured calls cost ~6-15 us more than eager ones once the kernels are long (>= 16 MiB).
        # one rank: NCCL launches no kernel for a 1-rank collective, so a captured graph would be
        # empty (torch warns "The CUDA Graph is empty"); measure eagerly
        self.graph_auto = o.graph is None and device.type == "cuda" and self.world > 1
        graph = o.graph if o.graph is not None else (device.type == "cuda" and self.world > 1)
        if graph and device.type != "cuda":
            raise UsageError("--graph needs CUDA (gloo collectives cannot be captured); drop --graph")
        # NCCL reads NCCL_ALGO when the communicator is created: decide before init, on every rank
        self.algo = apply_algo(resolve_algo(o.algo, self.world, self.local_world), backend)
        return backend, device, graph

    def _init_process_group(self, dist, backend: str, device) -> None:
        """Rendezvous with the other ranks (a lone rank makes up a local address)."""
        import datetime

        o = self.opts
        if self.world <= 1 and dist.is_initialized():
            return  # a lone rank already in a group (the caller's) uses it
        addr = os.environ.get("MASTER_ADDR")
        port = os.environ.get("MASTER_PORT")
        if self.world == 1 and not (addr and port):
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        elif not (addr and port):
            raise UsageError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set; launch with torchrun or use --nproc N")
        self.wd.enter(f"init: rendezvous of {self.world} ranks at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({backend})")
        kw: dict[str, Any] = {}
        if backend == "nccl":
            kw["device_id"] = device  # eager communicator init: a bad fabric fails here, named
        # torch's own timeout a little after ours, so our named cause wins
        dist.init_process_group(backend, init_method="env://", rank=self.rank, world_size=self.world,
                                timeout=datetime.timedelta(seconds=o.timeout + 15), **kw)

    def _gather_rank_facts(self, torch, dist, device) -> list[Any]:
        """Memory guard: every rank decides, everybody learns everybody's verdict; returns every rank's facts."""
        o = self.opts
        self.wd.enter("init: memory guard and rank facts")
        need = max(r.memory_need() for r in self.plan)
        mem = (o.max_memory, "--max-memory") if o.max_memory is not None else detect_memory(torch, device, self.local_world)
        verdict = memory_verdict(need, mem[0], mem[1], o.max_memory)
        info = _rank_info(torch, device, self.rank, self.local_rank, mem, verdict)
        infos: list[Any] = [None] * self.world
        dist.all_gather_object(infos, info)
        for i in infos:
            if i and i.get("memory_refusal"):
                raise UsageError(f"rank {i['rank']} on {i['host']}: {i['memory_refusal']}")
        return infos

    def _record_context(self, torch, backend: str, device, graph: bool, infos: list[Any]) -> None:
        """The evidence context: how this run was set up, for every later write."""
        o = self.opts
        nccl_version = None
        if backend == "nccl":
            try:
                v = torch.cuda.nccl.version()
                nccl_version = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            except Exception:
                pass
        self.context = {
            "source": "rdmacheck", "world_size": self.world, "backend": backend, "dtype": o.dtype, "ops": o.ops,
            "sizes": o.sizes, "graph": "auto" if self.graph_auto else graph, "check": o.check,
            "iters": o.iters if o.iters else f"time-based: {o.time_per_size * 1e3:g} ms per size, {o.min_iters}..{o.max_iters} calls",
            "warmup": o.warmup, "timing": ("CUDA events" if device.type == "cuda" else "perf_counter after a barrier")
            + "; time = max over ranks of the mean time per call",
            "expect_busbw": o.expect_busbw, "plateau_min_bytes": o.plateau_min_bytes,
            "ranks": infos, "torch_version": torch.__version__, "nccl_version": nccl_version,
            "notes": self.notes, "argv": o.argv, "config": o.config, "algo": self.algo,
        }

    def _sweep(self, torch, dist, device, graph: bool, infos: list[Any]) -> None:
        """Every planned size in order: print the preamble and a table row per size, write evidence after each."""
        o = self.opts
        timer = _Timer(torch, device)
        tdtype = getattr(torch, DTYPES[o.dtype][0])
        progress = o.progress if o.progress is not None else sys.stderr.isatty()
        compact = self.rank == 0 and use_compact(o.table)
        self.say_width = shutil.get_terminal_size().columns if compact else None
        head, line_of = (compact_header, compact_row) if compact else (header, row_line)
        if self.rank == 0:
            self._print_preamble(infos, graph, device)
        current_op = None

        for row in self.plan:
            tag = f"{row.op} {human_bytes(row.nbytes)}"
            if self.rank == 0 and row.op != current_op:
                current_op = row.op
                self._say(f"#\n# Collective: {row.op}  (dtype {row.dtype}, {self.world} ranks, algo {algo_label(self.algo)})")
                for line in head():
                    print(line, flush=True)
            if progress and self.rank == 0:
                _progress(row, tag)
            by_variant = self._run_size(torch, dist, device, tdtype, timer, row, graph, tag)
            if self.rank == 0:
                if progress:
                    sys.stderr.write("\r\033[K")
                print(line_of(row, by_variant), flush=True)
            self._write(complete=False)

    def _run_size(self, torch, dist, device, tdtype, timer: _Timer, row: PlanRow, graph: bool,
                  tag: str) -> dict[bool, dict[str, Any]]:
        """One size: hooks around every variant's measurement; its records join self.records."""
        wd = self.wd
        wd.enter(f"{tag}: before_size hooks")
        for h in self.hooks.before_size:
            self._hook(h, row)
        by_variant: dict[bool, dict[str, Any]] = {}
        for in_place in row.variants:
            phase = f"{tag} {'in-place' if in_place else 'out-of-place'}"
            wd.enter(f"{phase}: measure")
            try:
                rec = self._measure(torch, dist, device, tdtype, timer, row, in_place, graph, phase)
            except (UsageError, RankFailure):
                raise
            except Exception as e:  # a peer died, NCCL/gloo error, OOM ...
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise RankFailure(f"rank {self.rank}: {type(e).__name__} in phase '{self.wd.phase}': {msg[:300]}") from None
            by_variant[in_place] = rec
        main = by_variant.get(False) or by_variant[True]
        wd.enter(f"{tag}: after_size hooks")
        for h in self.hooks.after_size:
            self._hook(h, row, main)
        if device.type == "cuda":
            # hand this size's freed buffers back to the device: torch's allocator would otherwise keep
            # every earlier size's blocks, and a 1 GiB sweep would hold ~4x the largest buffer at its end
            torch.cuda.empty_cache()
        self.records.extend(by_variant[v] for v in row.variants)
        return by_variant

    def _finish(self, dist, backend: str) -> int:
        """after_run hooks, the final evidence, CSV and summary, then leave the group; returns the exit code."""
        o = self.opts
        wd = self.wd
        wd.enter("finish: after_run hooks")
        info_run = RunInfo(self.rank, self.world, backend, self.records, self.context, self._results(True))
        extra: list[Result] = []
        for h in self.hooks.after_run:
            extra.extend(self._hook(h, info_run) or [])
        results = self._write(complete=True, extra=extra)
        if self.rank == 0:
            if o.csv_path:
                write_csv(self.records, o.csv_path)
            self._print_summary(results)
        wd.enter(DONE_PHASE, timeout=min(o.timeout, 30))
        try:
            dist.destroy_process_group()
        except Exception:
            pass
        return exit_code(results)

    def _hook(self, h, *args):
        """A hook that raises ends the run like a failed collective (rdmacheck.bench.hooks): exit 1, named."""
        try:
            return h(*args)
        except (UsageError, RankFailure):
            raise
        except Exception as e:
            name = getattr(h, "__qualname__", None) or type(h).__name__
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise RankFailure(f"rank {self.rank}: hook {name} raised {type(e).__name__} in phase "
                              f"'{self.wd.phase}'{': ' + msg if msg else ''}") from None

    # -- one measurement --------------------------------------------------------------------------
    def _measure(self, torch, dist, device, tdtype, timer: _Timer, row: PlanRow, in_place: bool, graph: bool,
                 phase: str) -> dict[str, Any]:
        o = self.opts
        wd = self.wd
        coll = COLLECTIVES[row.op]
        from .collectives import Layout

        lay = Layout(row.count, row.send, row.recv)
        wd.enter(f"{phase}: allocate")
        b = coll.make(torch, dist, lay, self.rank, self.world, tdtype, device, in_place)
        # every collective this variant issues, as a NIC counter around the size sees them (the record's
        # "calls", which bench.wire multiplies by the bytes per call); captured calls run on replay
        calls = 0
        per_graph = 0

        def call() -> None:
            nonlocal calls
            calls += 1
            b.call()

        def replay() -> None:
            nonlocal calls
            calls += per_graph
            g.replay()

        b.fill()
        wd.enter(f"{phase}: warmup")
        for _ in range(o.warmup):
            call()
        timer.sync()
        est = None
        if o.iters:
            iters = o.iters
        else:
            wd.enter(f"{phase}: estimate")
            est = timer.run(call, 3)
            est = self._allreduce_max(torch, dist, device, est)
            iters = int(min(o.max_iters, max(o.min_iters, o.time_per_size / max(est, 1e-7))))
        fn, calls_per_fn = call, 1
        g = None
        # auto: at >= 1 ms per call the launch overhead a graph hides is under 3%, and NCCL's
        # captured calls run slower there (measured, see docs/bench.md): stay eager, skip capture
        if graph and not (self.graph_auto and est is not None and est > 1e-3):
            wd.enter(f"{phase}: capture CUDA graph")
            per_graph = min(iters, 100)
            try:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    call()
                torch.cuda.current_stream().wait_stream(s)
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(per_graph):
                        b.call()
                replay()
                torch.cuda.synchronize()
                fn, calls_per_fn = replay, per_graph
                if self.graph_auto:
                    wd.enter(f"{phase}: graph or eager")
                    tg = timer.run(replay, 1) / per_graph
                    timer.run(call, 3)  # the first eager calls after a replay run slow
                    te = timer.run(call, per_graph)
                    tg, te = self._allreduce_max(torch, dist, device, tg, te)
                    if te < tg:
                        fn, calls_per_fn, g = call, 1, None
            except Exception as e:  # capture unsupported here: measure eagerly and say so
                g = None
                fn, calls_per_fn = call, 1
                self.context.setdefault("graph_fallback", f"{row.op}: {type(e).__name__}: {str(e)[:200]}")
        reps = max(1, -(-iters // calls_per_fn))
        wd.enter(f"{phase}: timed loop ({reps * calls_per_fn} calls)")
        self._barrier(torch, dist, device)
        # the timed loop calls the raw callable (no counting wrapper inside the measurement)
        t = timer.run(g.replay if fn is replay else b.call, reps) / calls_per_fn
        calls += reps * calls_per_fn
        t = self._allreduce_max(torch, dist, device, t)
        used_graph = g is not None
        del g
        wrong = None
        if o.check:
            wd.enter(f"{phase}: check")
            b.fill()
            timer.sync()
            self._barrier(torch, dist, device)
            call()
            timer.sync()
            # compared slice by slice against an expected slice built for it: a whole-buffer expected copy
            # would double the rank's memory at the largest size (the memory goal is <= 2x the buffer)
            out = b.out.reshape(-1)
            local = sum(int((out[i:i + SLICE] != b.expected(i, min(SLICE, out.numel() - i))).sum().item())
                        for i in range(0, out.numel(), SLICE))
            wrong = int(self._allreduce_sum(torch, dist, device, local))
        alg, bus = coll.bandwidth(row.nbytes, t, self.world)
        return {
            "op": row.op, "bytes": row.nbytes, "count": row.count, "dtype": row.dtype, "redop": row.redop,
            "root": row.root, "time_us": t * 1e6, "algbw": alg, "busbw": bus, "wrong": wrong, "in_place": in_place,
            "world_size": self.world, "backend": self.backend, "iters": reps * calls_per_fn,
            "graph": used_graph, "calls": calls,
        }

    def _allreduce_max(self, torch, dist, device, *v: float):
        if self.world == 1:
            return v[0] if len(v) == 1 else v
        x = torch.tensor(list(v), dtype=torch.float64, device=device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        out = [float(a) for a in x.tolist()]
        return out[0] if len(v) == 1 else out

    def _allreduce_sum(self, torch, dist, device, v: int) -> int:
        if self.world == 1:
            return v
        x = torch.tensor([v], dtype=torch.int64, device=device)
        dist.all_reduce(x)
        return int(x.item())

    def _barrier(self, torch, dist, device) -> None:
        if self.world > 1:
            x = torch.zeros(1, device=device)
            dist.all_reduce(x)
            if device.type == "cuda":
                torch.cuda.synchronize()

    # -- printing (rank 0) ---------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        """One of rank 0's '#' lines; beside the compact table (a narrow terminal) wrapped on words to the
        terminal's width, each continuation starting '#     ' so the nccl-tests importer still skips it."""
        w = getattr(self, "say_width", None)
        for line in text.split("\n"):
            if w and len(line) > w:
                line = "\n".join(textwrap.wrap(line, w, subsequent_indent="#     ", break_long_words=False,
                                               break_on_hyphens=False))
            print(line, flush=True)

    def _print_preamble(self, infos, graph: bool, device) -> None:
        o = self.opts
        it = (f"{o.iters}" if o.iters else f"time-based ({o.time_per_size * 1e3:g} ms per size, {o.min_iters}..{o.max_iters})")
        self._say(f"# rdmacheck bench: {', '.join(o.ops)}  ranks {self.world}  backend {self.backend}  dtype {o.dtype}  "
              f"warmup {o.warmup}  iters {it}  graph {'auto' if self.graph_auto else ('on' if graph else 'off')}  "
              f"check {'on' if o.check else 'off'}  algo {algo_label(self.algo)}")
        for i in infos:
            where = f"{i.get('gpu_bus_id', '')} {i.get('gpu', 'CPU')}".strip()
            hcas = ",".join(i.get("hcas") or []) or "-"
            self._say(f"#  Rank {i['rank']:2d} Pid {i['pid']:6d} on {i['host']:>10s} device {i['local_rank']:2d} [{where}]  HCAs {hcas}")
        t = "CUDA events" if device.type == "cuda" else "perf_counter after a barrier"
        self._say(f"# time = MAX over the {self.world} ranks of each rank's mean time per call ({t}); "
              "algbw = size/time, busbw = algbw x nccl-tests factor; GB/s = 1e9 B/s")
        for n in self.notes:
            self._say(f"# note: {n}")

    def _print_summary(self, results: list[Result]) -> None:
        wrong = sum(int(r["wrong"] or 0) for r in self.records)
        self._say(f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}" if self.opts.check else "# #wrong not checked (--no-check)")
        for line in blank_columns_note(dict.fromkeys(r.op for r in self.plan)):
            self._say(f"# note: {line}")
        self._say("#")
        for r in results:
            self._say(f"# [{r.status.value.upper():4s}] {r.id}: {r.observed}" + (f"  (expected {r.expected})" if r.status is not Status.PASS else ""))
            if r.status in (Status.FAIL, Status.WARN) and r.remedy:
                self._say(f"#        -> {r.remedy}")
        w = self.context.get("wall_s") or {}
        if w:
            self._say("# wall: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in w.items()))
        if self.opts.json_path:
            self._say(f"# evidence: {self.opts.json_path}")
        if self.opts.csv_path:
            self._say(f"# csv: {self.opts.csv_path}")


def _progress(row: PlanRow, tag: str) -> None:
    width = 24
    done = int(width * row.index / max(row.total, 1))
    sys.stderr.write(f"\r\033[K[{'#' * done}{'.' * (width - done)}] {row.index + 1}/{row.total} {tag}")
    sys.stderr.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(opts: BenchOptions, hooks: BenchHooks | None = None) -> int:
    """Run this process's rank of the sweep; returns the exit code."""
    return Runner(opts, hooks).run()
