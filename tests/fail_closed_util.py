"""Shared by the fail-closed suites: run the real CLI and judge the run the same way every time.

``Judge.run`` starts ``python -m rdmacheck ARGS`` in a subprocess and asserts what every command
promises on a bad input: an exit code in the allowed set, no traceback on stderr, the wall time
under its bound, and no pre-existing output file changed when the exit is not 0 and not 1 (exit 1
of preflight/bench/launch writes evidence of the failure by design: docs/failure-semantics.md).
Every run is counted by exit code; the suites print the counts.
"""

from __future__ import annotations

import collections
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

# the CLI under test; RDMACHECK_UNDER_TEST points these suites at another checkout (to prove that a
# case fails on an older tree: RDMACHECK_UNDER_TEST=/path/to/old/checkout pytest tests/test_fail_closed.py)
UNDER_TEST = Path(os.environ.get("RDMACHECK_UNDER_TEST") or REPO)

COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _snapshot(paths: list[Path]) -> dict[Path, tuple]:
    out = {}
    for p in paths:
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            out[p] = None
            continue
        body = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[p] = (stat.S_IFMT(st.st_mode), st.st_rdev, body)
    return out


def cli(*args: str, env: dict | None = None, timeout: float = 60,
        cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    e["PYTHONPATH"] = str(UNDER_TEST) + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    t0 = time.monotonic()
    cp = subprocess.run([sys.executable, "-m", "rdmacheck", *args], capture_output=True, text=True,
                        timeout=timeout, env=e, cwd=cwd or UNDER_TEST, input="", errors="replace")
    return cp, time.monotonic() - t0


def judge(suite: str, args: list[str], allowed: set[int], *, outputs: list[Path] = (), bound: float = 30.0,
          env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI once and assert the fail-closed contract; returns the finished process."""
    before = _snapshot(list(outputs))
    try:
        cp, wall = cli(*args, env=env, timeout=bound + 30, cwd=cwd)
    except subprocess.TimeoutExpired:
        COUNTS[suite]["hang"] += 1
        raise AssertionError(f"rdmacheck {' '.join(args)[:300]} still running after {bound + 30:g} s")
    COUNTS[suite][cp.returncode] += 1
    what = f"rdmacheck {' '.join(a[:80] for a in args)[:400]} -> {cp.returncode}\n{cp.stderr[-1500:]}"
    assert "Traceback" not in cp.stderr and "Traceback" not in cp.stdout, what
    assert cp.returncode in allowed, what
    assert wall < bound, f"{what}\ntook {wall:.1f} s (bound {bound:g} s)"
    if cp.returncode not in (0, 1):
        assert _snapshot(list(outputs)) == before, f"{what}\nan existing output changed although the run failed"
    if cp.returncode == 2:
        lines = [l for l in cp.stderr.splitlines() if l.startswith("rdmacheck: error:")]
        assert lines, what
    return cp


def summary() -> str:
    lines = []
    total = collections.Counter()
    for suite, c in sorted(COUNTS.items()):
        total.update(c)
        lines.append(f"{suite}: {sum(c.values())} CLI runs, by exit code "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=str)))
    if total:
        lines.append(f"all: {sum(total.values())} CLI runs, by exit code "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(total.items(), key=str)))
    return "\n".join(lines)


def print_counts(request, tag: str, extra: str = "") -> None:
    """Show the counts in the test session's output, also under -q and when every test passed."""
    text = "\n".join(t for t in (summary(), extra) if t)
    if not text:
        return
    cm = request.config.pluginmanager.getplugin("capturemanager")
    with cm.global_and_fixture_disabled():
        print("\n" + "\n".join(f"[{tag}] {line}" for line in text.splitlines()), flush=True)
