"""A newcomer's box: a ``docker`` CLI but no daemon and no compose plugin (issue 26).

``launch`` with docker.compose waived hit ``assert prep.inv is not None`` (exit 3).  The test builds that
environment without touching the machine: a PATH of one folder whose ``docker`` passes every command to the
real CLI except ``compose``, which it answers as a docker CLI without the plugin does, and no
``docker-compose``; DOCKER_HOST names a socket where nothing listens (no daemon).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, require

NO_PLUGIN = """#!/bin/sh
# the docker CLI as it is without the compose plugin: `docker compose ...` is an unknown command
if [ "$1" = "compose" ]; then
    echo "docker: 'compose' is not a docker command." >&2
    echo "See 'docker --help'" >&2
    exit 1
fi
exec {real} "$@"
"""


def _no_compose_env(tmp: Path) -> dict[str, str]:
    real = shutil.which("docker")
    require(real is not None, "docker CLI not installed (bash .ci/run installs it)")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(NO_PLUGIN.format(real=real))
    (bin_dir / "docker").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CI")}
    env.update(PATH=str(bin_dir), PYTHONPATH=str(REPO), DOCKER_HOST=f"unix://{tmp}/no-daemon.sock",
               XDG_STATE_HOME=str(tmp / "state"), NO_COLOR="1")
    return env


def _launch(tmp: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    env_file = tmp / "node.env"
    env_file.write_text((REPO / "docker" / ".env.example").read_text())
    return subprocess.run([sys.executable, "-m", "rdmacheck", "launch", "--role", "head", "--env", str(env_file),
                           "--compose", str(REPO / "docker" / "compose.yaml"), *extra],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp)


def test_the_environment_really_has_no_compose(tmp_path):
    env = _no_compose_env(tmp_path)
    p = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode != 0 and "not a docker command" in p.stderr
    assert shutil.which("docker-compose", path=env["PATH"]) is None
    assert subprocess.run(["docker", "--version"], capture_output=True, env=env, timeout=30).returncode == 0


def test_launch_with_compose_waived_is_exit_1_not_a_crash(tmp_path):
    env = _no_compose_env(tmp_path)
    dry = _launch(tmp_path, env, "--dry-run", "--json", str(tmp_path / "dry.json"))
    assert dry.returncode == 1 and "Traceback" not in dry.stderr, dry.stderr[-2000:]
    failing = [r["id"] for r in json.loads((tmp_path / "dry.json").read_text())["results"] if r["status"] == "fail"]
    assert "docker.compose" in failing
    waive = [a for g in failing for a in ("--waive", g, "--reason", "no compose on this box")]
    for extra in (["--dry-run"], []):
        js = tmp_path / f"w{len(extra)}.json"
        p = _launch(tmp_path, env, *extra, "--json", str(js), *waive)
        out = p.stdout + p.stderr
        assert p.returncode == 1, out[-2000:]                      # not 3, and not a launch
        assert "internal error" not in out and "Traceback" not in out, out[-2000:]
        assert "no compose implementation found" in out
        up = {r["id"]: r for r in json.loads(js.read_text())["results"]}["launch.up"]
        assert up["status"] == "fail" and "docker.compose was waived" in up["observed"]
    assert not (tmp_path / "state").exists()                      # no crash report
