"""Ranks die with the launcher: SIGTERM or SIGKILL to ``bench --nproc`` leaves no rank and no temp folder.

(issue 26, "Processes") The ranks used to finish the sweep after the launcher was gone, rewrite --json and
leave the status folder.  Real gloo ranks (torch CPU build), the real CLI; the launcher is signalled once
both ranks are inside the sweep, then 5 s later no rank may be alive, the status folder must be gone and
--json must not have changed since.  Also: a --nproc the node cannot hold is refused before anything starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, require_module, run_cli


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _status_dir(pid: int) -> Path | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for kv in env:
        if kv.startswith(b"RDMACHECK_BENCH_STATUS_DIR="):
            return Path(kv.split(b"=", 1)[1].decode())
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_rank_and_no_temp_folder_outlive_the_launcher(tmp_path, sig):
    require_module("torch")
    js = tmp_path / "b.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NO_COLOR", None)
    # a sweep that lasts minutes: the signal lands in its middle
    launcher = subprocess.Popen(
        [sys.executable, "-m", "rdmacheck", "bench", "--nproc", "2", "--backend", "gloo", "--no-progress",
         "--warmup", "1", "--sizes", "1K..1M", "--time-per-size", "30", "--timeout", "120", "--expect-busbw", "0",
         "--json", str(js)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    ranks: list[int] = []
    status: Path | None = None
    try:
        deadline = time.monotonic() + 240   # importing torch on a loaded 2-core machine
        while time.monotonic() < deadline:
            ranks = _children(launcher.pid)
            status = status or next((d for d in map(_status_dir, ranks) if d), None)
            if len(ranks) == 2 and status and js.is_file():   # rank 0 wrote the first size: inside the sweep
                break
            assert launcher.poll() is None, launcher.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the ranks did not reach the sweep in 240 s")
        assert status.is_dir()
        os.kill(launcher.pid, sig)
        launcher.wait(timeout=30)
        died = time.monotonic()
        written = js.stat().st_mtime_ns
        time.sleep(5)
        alive = [r for r in ranks if _alive(r)]
        assert not alive, f"ranks {alive} outlived the launcher ({sig.name})"
        assert not status.exists(), f"{status} outlived the launcher ({sig.name})"
        assert js.stat().st_mtime_ns == written, "--json was rewritten after the launcher died"
        if sig is signal.SIGTERM:
            assert launcher.returncode == 143, launcher.communicate()
            assert "Traceback" not in launcher.stderr.read()
        assert time.monotonic() - died >= 5
    finally:  # a failed run must not leave its ranks (orphans by now) or folder behind
        if launcher.poll() is None:
            launcher.kill()
        for r in set(ranks) | set(_children(launcher.pid)):
            if _alive(r):
                try:
                    os.kill(r, signal.SIGKILL)
                except OSError:
                    pass
        if status is not None:
            import shutil

            shutil.rmtree(status, ignore_errors=True)


def test_nproc_beyond_the_node_is_refused_at_once():
    require_module("torch")   # without torch the bench says so first (a fresh venv of the quick start)
    t0 = time.monotonic()
    p = run_cli("bench", "--nproc", "1000", "--backend", "gloo", "--sizes", "1K", timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rdmacheck: error: --nproc 1000: this node has"), p.stderr
    assert "usable CPU" in lines[0] and "at most" in lines[0]
    assert time.monotonic() - t0 < 30
