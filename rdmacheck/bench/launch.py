"""``--nproc N``: start N local ranks and watch them; never imports torch.

Each rank is ``python -m rdmacheck.bench.child`` with the environment torchrun
would give it (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), so the rank code is the same under torchrun and here.

The parent is the watchdog of last resort: when a rank dies (killed, crashed)
it gives the others a short grace to report, stops them, names the rank that
died first and the phase it was in (each rank publishes its phase to a status
folder), records that cause in the evidence file and exits 1.  When no rank
exits but none makes progress, it stops them all after --timeout plus a grace.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rdmacheck.util.errors import Terminated, UsageError
from .child import OPTIONS_FILE_ENV, PARENT_PID_ENV
from .runner import DONE_PHASE, STATUS_DIR_ENV, BenchOptions

GRACE_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _phase(status_dir: Path, rank: int) -> str:
    try:
        return (status_dir / f"rank{rank}").read_text().strip() or "start"
    except OSError:
        return "start (before importing torch)"


STALE_S = 5.0   # a heartbeat older than this: the rank is not running (watchdog ticks every 0.2 s)


def _stalled(procs: list[subprocess.Popen], status_dir: Path) -> list[tuple[int, str]]:
    """Live ranks that stopped progressing themselves: (rank, why), most certain first.

    A rank blocked in a collective waiting for a peer still ticks its heartbeat; a
    rank stopped by a signal (process state T) or frozen does not.
    """
    now = time.time()
    out: list[tuple[int, str]] = []
    for r, p in enumerate(procs):
        if p.poll() is not None:
            continue
        try:
            state = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "?"
        if state in ("T", "t"):
            out.insert(0, (r, "is stopped (process state T: SIGSTOP/SIGTSTP or a debugger)"))
            continue
        try:
            age = now - (status_dir / f"rank{r}.beat").stat().st_mtime
        except OSError:
            continue
        if age > STALE_S:
            out.append((r, f"stopped making progress (no heartbeat for {age:.0f} s: frozen, or starved of CPU)"))
    return out


def _record_cause(json_path: str | None, cause: str) -> None:
    """Put the launcher's cause into rank 0's evidence (finished sizes kept)."""
    if not json_path:
        return
    from rdmacheck.evidence.model import Evidence, Result, Status
    from rdmacheck.evidence.jsonout import read_evidence, write_evidence

    try:
        ev = read_evidence(json_path)
    except Exception:
        ev = Evidence(kind="bench")
    ev.results = [r for r in ev.results if r.id != "bench.run"]
    ev.results.append(Result("bench.run", Status.FAIL, observed=cause, expected="every rank finishes the sweep",
                             remedy="see the cause named; the sizes finished before it are kept in the records"))
    ev.context["complete"] = False
    try:
        write_evidence(ev, json_path)
    except Exception:
        pass


RANK_MEMORY = 300 << 20   # one rank: a Python process with torch imported (~250-350 MiB resident on CPU)
RANKS_PER_CPU = 8         # oversubscribing a CPU is fine for a gloo test; thousands of ranks are not


def max_local_ranks() -> tuple[int, str]:
    """(the most ranks ``--nproc`` may start here, what bounds it), from the usable CPUs and MemTotal (what the
    node has; MemAvailable swings with whatever else runs and would refuse a run that fits)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    by_cpu = RANKS_PER_CPU * cpus
    by_mem = max(1, avail // RANK_MEMORY) if avail is not None else by_cpu
    what = (f"{cpus} usable CPU(s)" + (f" and {avail / (1 << 30):.1f} GiB of memory" if avail is not None else "")
            + f" (at most {RANKS_PER_CPU} ranks per CPU, ~{RANK_MEMORY >> 20} MiB each)")
    return max(1, min(by_cpu, by_mem)), what


def check_nproc(nproc: int) -> None:
    """Refuse before starting anything a --nproc this node cannot run (exit 2, one line)."""
    limit, what = max_local_ranks()
    if nproc > limit:
        raise UsageError(f"--nproc {nproc}: this node has {what}: at most {limit} local ranks; use --nproc {limit} "
                         "or fewer, or torchrun across nodes")


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _popen_group(cmd: list[str], env: dict[str, str], pgid: int) -> subprocess.Popen:
    """A rank in the ranks' own process group (``pgid`` 0: a new one, led by this rank)."""
    if sys.version_info >= (3, 11):
        return subprocess.Popen(cmd, env=env, process_group=pgid)
    return subprocess.Popen(cmd, env=env, preexec_fn=lambda: os.setpgid(0, pgid))  # noqa: PLW1509


def spawn(opts: BenchOptions, nproc: int, env_extra: dict[str, str] | None = None) -> int:
    check_nproc(nproc)
    # SIGTERM to the launcher must stop the ranks and remove the status folder (the finally below); Python's
    # default would end this process alone.  SIGKILL cannot be caught: the ranks see it (child.die_with_parent).
    try:
        prev_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        prev_term = None
    try:
        return _spawn(opts, nproc, env_extra)
    finally:
        if prev_term is not None:
            signal.signal(signal.SIGTERM, prev_term)


def _spawn(opts: BenchOptions, nproc: int, env_extra: dict[str, str] | None = None) -> int:
    status_dir = Path(tempfile.mkdtemp(prefix="rdmacheck-bench-"))
    pkg_root = str(Path(__file__).resolve().parents[2])
    base = dict(os.environ)
    base.update(env_extra or {})
    base["PYTHONPATH"] = pkg_root + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
    base.setdefault("OMP_NUM_THREADS", "1")  # as torchrun does: N ranks must not each take every core
    base.update({
        "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()), STATUS_DIR_ENV: str(status_dir),
        OPTIONS_FILE_ENV: str(status_dir / "options.json"), PARENT_PID_ENV: str(os.getpid()),
    })
    (status_dir / "options.json").write_text(opts.to_json(), encoding="utf-8")
    procs: list[subprocess.Popen] = []
    try:
        for r in range(nproc):
            env = dict(base, RANK=str(r), LOCAL_RANK=str(r))
            procs.append(_popen_group([sys.executable, "-m", "rdmacheck.bench.child"], env,
                                      procs[0].pid if procs else 0))
        return _watch(procs, status_dir, opts)
    except (KeyboardInterrupt, Terminated) as e:
        _stop(procs)
        _record_cause(opts.json_path, f"the launcher was {'terminated (SIGTERM)' if isinstance(e, Terminated) else 'interrupted'}"
                                      "; the ranks were stopped")
        raise
    finally:
        _stop(procs)
        shutil.rmtree(status_dir, ignore_errors=True)


def _say_usage_of_others(status_dir: Path, rcs: list[int | None]) -> None:
    """Rank 0 prints a refusal every rank shares; one only another rank met is left in the status dir."""
    if rcs and rcs[0] == 2:
        return
    for r in range(1, len(rcs)):
        p = status_dir / f"usage-{r}.txt"
        if p.is_file():
            print(f"rdmacheck: error: rank {r}: {p.read_text(encoding='utf-8', errors='replace').strip()}", file=sys.stderr)
            return


def _watch(procs: list[subprocess.Popen], status_dir: Path, opts: BenchOptions) -> int:
    n = len(procs)
    last_phase = {r: "" for r in range(n)}
    last_change = time.monotonic()
    killed: tuple[int, int] | None = None     # first rank killed by a signal or crashed: the cause
    reacted: tuple[int, int, float] | None = None  # first rank that exited 1/2 by itself while others run
    while True:
        rcs = [p.poll() for p in procs]
        now = time.monotonic()
        for r in range(n):
            ph = _phase(status_dir, r)
            if ph != last_phase[r]:
                last_phase[r] = ph
                last_change = now
        for r, rc in enumerate(rcs):
            if rc is not None and rc not in (0, 1, 2) and killed is None:
                killed = (r, rc)
                killed_at = now
            elif rc in (1, 2) and reacted is None and not (rc == 1 and last_phase[r] == DONE_PHASE):
                # a rank that exits 1 from the done phase ran to the end and gives its verdict (a gate
                # failed): the others are finishing too, however long a loaded machine takes for that
                # (the no-progress bound below still holds them), so it is no rank giving up
                reacted = (r, rc, now)
        if 3 in rcs:
            # a rank hit a bug: it printed the one line and saved its crash report
            _stop(procs)
            return 3
        if all(rc is not None for rc in rcs) and killed is None:
            # every rank ended by itself: 2 usage error, 1 a gate failed, 0 all passed
            if 2 in rcs:
                _say_usage_of_others(status_dir, rcs)
                return 2
            return 1 if any(rcs) else 0
        if killed is not None and (all(rc is not None for rc in rcs) or now - killed_at > GRACE_S):
            r, rc = killed
            break
        if killed is None and reacted is not None and now - reacted[2] > GRACE_S:
            # a rank gave up (it printed why) and the others did not follow: stop them
            r, rc = reacted[0], reacted[1]
            if rc == 2:
                _stop(procs)
                _say_usage_of_others(status_dir, rcs)
                return 2
            stalled = _stalled(procs, status_dir)
            if stalled and stalled[0][0] != r:
                # rank r timed out waiting; the rank it waited for is the cause
                return _stalled_cause(procs, status_dir, opts, stalled[0], r, last_phase)
            break
        # importing torch has the rank's own longer bound (runner: max(--timeout, 300 s)): a loaded
        # machine can take longer than a short --timeout just to import it
        importing = any(rcs[q] is None and (last_phase[q].startswith("start") or last_phase[q] in ("", "init: import torch"))
                        for q in range(n))
        limit = (max(opts.timeout, 300.0) if importing else opts.timeout) + 2 * GRACE_S
        if killed is None and reacted is None and now - last_change > limit:
            stalled = _stalled(procs, status_dir)
            if stalled:
                return _stalled_cause(procs, status_dir, opts, stalled[0], None, last_phase)
            stuck = ", ".join(f"rank {q} in '{last_phase[q]}'" for q in range(n) if rcs[q] is None)
            cause = f"no rank made progress for {opts.timeout:g} s ({stuck}); stopped them all"
            _stop(procs)
            print(f"rdmacheck: bench: {cause}", file=sys.stderr)
            _record_cause(opts.json_path, cause)
            return 1
        time.sleep(0.1)
    cause = f"rank {r} {_describe(rc)} in phase '{last_phase[r] or _phase(status_dir, r)}'"
    if any(p.poll() is None for p in procs):
        cause += "; the other ranks were stopped"
    _stop(procs)
    print(f"rdmacheck: bench: {cause}", file=sys.stderr)
    _record_cause(opts.json_path, cause)
    return 1


def _stalled_cause(procs, status_dir: Path, opts: BenchOptions, stalled: tuple[int, str], waiter: int | None,
                   last_phase: dict[int, str]) -> int:
    r, why = stalled
    cause = f"rank {r} {why} in phase '{last_phase.get(r) or _phase(status_dir, r)}'"
    cause += (f"; rank {waiter} gave up waiting for it after {opts.timeout:g} s" if waiter is not None
              else f"; no rank made progress for {opts.timeout:g} s") + "; the ranks were stopped"
    _stop(procs)
    print(f"rdmacheck: bench: {cause}", file=sys.stderr)
    _record_cause(opts.json_path, cause)
    return 1


def _stop(procs: list[subprocess.Popen]) -> None:
    if procs and procs[0].poll() is None:
        # the ranks' process group, led by rank 0 (alive, so the group id is still theirs): every rank and
        # whatever a rank started
        try:
            os.killpg(procs[0].pid, signal.SIGTERM)
        except OSError:
            pass
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + 3
    for p in alive:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

