"""The soft-RoCE session's `rdmacheck` function (tests/softroce/runs.sh) and its fork server, on this host.

In the guest every rdmacheck run is a fork of one warm Python (tests/softroce/forkserver.py says why).
These tests prove that, to rdmacheck, such a run is the run its own `env -i ... python -m rdmacheck`
process makes: the same exit code, output and verdicts, with the scenario's variables and the calling
shell's limits, and that a run past its time is killed with `timeout`'s 124.  Nothing is mocked: real
rdmacheck runs of this checkout on this host, through the same shell function the guest sources; the
expected values are what the plain process gives here, whatever this host's verdicts are.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from conftest import REPO

RUNS_SH = REPO / "tests" / "softroce" / "runs.sh"
ENVFILE = REPO / "tests" / "softroce" / "reference.env"

# The same runs twice: through the fork server (in parallel, as the session starts them), then each as
# its own process (FORKSERVER unset: the function's fallback, what every run was before).
SCRIPT = r"""
set -u
. "$RUNS_SH"
forkserver_ready || exit 9
runs() {  # $1: suffix of the output names
    rdmacheck "$O/plain$1" -- preflight -q --env "$ENVFILE" --json "$O/plain$1.json" &
    rdmacheck "$O/ifname$1" NCCL_SOCKET_IFNAME=lo -- preflight -q --env "$ENVFILE" --json "$O/ifname$1.json" &
    ( ulimit -Sl 1024 && ulimit -Ss 4096 && \
      rdmacheck "$O/limits$1" -- preflight -q --env "$ENVFILE" --only limits.memlock,limits.stack --json "$O/limits$1.json" ) &
    rdmacheck "$O/usage$1" -- preflight --no-such-flag &
    wait
}
runs _fork
s=$(date +%s.%N)
RDMACHECK_TIMEOUT=2 rdmacheck "$O/hang" -- watch --listen "127.0.0.1:$PORT" --interval 60
echo "$s $(date +%s.%N)" > "$O/hang.wall"
forkserver_stop
runs _own
"""


def _results(path):
    return {r["id"]: (r["status"], r["observed"]) for r in json.loads(path.read_text())["results"]}


def test_a_forked_run_is_the_run_of_its_own_process(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with socket.socket() as s:  # a free port for the watch that is meant to hang
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
           "O": str(out), "REPO": str(REPO), "PY": sys.executable, "RUNS_SH": str(RUNS_SH),
           "ENVFILE": str(ENVFILE), "TMPDIR": str(tmp_path), "PORT": str(port)}
    cp = subprocess.run(["bash", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    log = (out / "forkserver.log").read_text()
    assert log == "", log  # the server imported every module it preloads, and no request failed

    for name in ("plain", "ifname", "limits", "usage"):
        fork, own = out / f"{name}_fork", out / f"{name}_own"
        assert fork.with_suffix(".rc").read_text() == own.with_suffix(".rc").read_text(), name
        assert fork.with_suffix(".out").read_text() == own.with_suffix(".out").read_text(), name
        start, end = map(float, fork.with_suffix(".time").read_text().split())
        assert 0 <= end - start < 120, name
    assert (out / "usage_fork.rc").read_text().strip() == "2"  # a usage error, as its own process says
    for name in ("plain", "ifname", "limits"):
        assert _results(out / f"{name}_fork.json") == _results(out / f"{name}_own.json"), name

    # the scenario's variable and the subshell's limits reached the forked run (they change its verdicts)
    assert _results(out / "ifname_fork.json")["nccl.env"] != _results(out / "plain_fork.json")["nccl.env"]
    limits = _results(out / "limits_fork.json")
    assert "soft 1 MiB" in limits["limits.memlock"][1] and "soft 4 MiB" in limits["limits.stack"][1], limits

    # a run that never ends is killed at its time, with its own children, and says 124 like `timeout`
    assert (out / "hang.rc").read_text().strip() == "124"
    start, end = map(float, (out / "hang.wall").read_text().split())
    assert end - start < 30
    # and once stopped, no process of the server is left (its FIFOs are under this test's TMPDIR)
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-af", f"forkserver.py {tmp_path}"], capture_output=True, text=True).stdout
    assert not left.strip(), left
