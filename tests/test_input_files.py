"""Every file a user names goes through one bounded reader (rdmacheck.util.inputs): a FIFO, a device or an
oversize file is refused in one line with exit 2, at once, never read (a FIFO with no writer would block
the reader forever, /dev/zero never ends)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli

ENVFILE = REPO / "docker" / ".env.example"


def _fifo(tmp_path: Path) -> Path:
    f = tmp_path / "fifo"
    os.mkfifo(f)
    return f


# (what, argv with {} for the file, the words the one line names the input by)
CASES = [
    ("--facts", ["preflight", "--facts", "{}"], "evidence file"),
    ("--compose", ["launch", "--role", "head", "--env", str(ENVFILE), "--compose", "{}", "--dry-run"], "compose file"),
    ("quarantine file", ["cluster", "--ray-address", "127.0.0.1:6379", "--isolate", "--quarantine-file", "{}"],
     "--quarantine-file"),
    ("report evidence", ["report", "{}", "-o", "{out}"], "evidence"),
]


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("what,argv,names", CASES, ids=[c[0] for c in CASES])
def test_fifo_and_device_refused_in_one_line(tmp_path, kind, what, argv, names):
    path = _fifo(tmp_path) if kind == "fifo" else Path("/dev/zero")
    args = [a.replace("{}", str(path)).replace("{out}", str(tmp_path / "r.html")) for a in argv]
    t0 = time.monotonic()
    p = run_cli(*args, timeout=30)
    took = time.monotonic() - t0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(lines) == 1 and lines[0].startswith("rdmacheck: error:") and names in lines[0], p.stderr
    assert ("FIFO" in lines[0] or "character device" in lines[0]) and "not a regular file" in lines[0], lines[0]
    assert "Traceback" not in p.stdout + p.stderr
    # the bound: a subprocess (cluster, launch) pays a Python start and its imports on a loaded 2-core machine
    assert took < (1.0 if what in ("--facts", "report evidence") else 15), took


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_evidence_v1_converter_refuses_fifo_and_device(tmp_path, kind):
    path = _fifo(tmp_path) if kind == "fifo" else Path("/dev/zero")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "rdmacheck.evidence_v1", str(path)], capture_output=True, text=True,
                       timeout=30, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 2 and "not a regular file" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert time.monotonic() - t0 < 15


def test_oversize_facts_file_is_refused_unread(tmp_path):
    from rdmacheck.util.inputs import EVIDENCE_MAX

    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(EVIDENCE_MAX + 1)    # sparse: costs no disk
    p = run_cli("preflight", "--facts", str(big))
    assert p.returncode == 2 and "larger than" in p.stderr, p.stderr


# ---------------------------------------------------------------- --root tarballs (issue 26 E2)

def _tar(path, src, arcname):
    import tarfile

    with tarfile.open(path, "w:gz") as t:
        t.add(src, arcname=arcname)
    return path


def test_a_capture_packed_with_its_folder_is_entered_not_read_as_an_empty_host(captures, tmp_path):
    """Every real capture tarball holds one top folder (`tar czf node.tar.gz node/`): it used to replay as a
    host with no RDMA device.  Judged through the tarball it gives the folder's own verdicts."""
    import json

    src = captures / "sysfs" / "node_exporter"
    tb = _tar(tmp_path / "node.tar.gz", src, "node_exporter")
    a, b = tmp_path / "dir.json", tmp_path / "tar.json"
    pa = run_cli("preflight", "--root", str(src), "--json", str(a))
    pb = run_cli("preflight", "--root", str(tb), "--json", str(b))
    assert pa.returncode == pb.returncode, pb.stdout + pb.stderr
    va = {r["id"]: (r["status"], r["observed"]) for r in json.loads(a.read_text())["results"]}
    vb = {r["id"]: (r["status"], r["observed"]) for r in json.loads(b.read_text())["results"]}
    assert va == vb and va["rdma.devices"][0] != "fail", va["rdma.devices"]


def test_a_tarball_without_a_host_tree_or_past_the_size_cap_is_refused_in_one_line(tmp_path, monkeypatch):
    from rdmacheck.preflight import root as rootmod

    docs = tmp_path / "notes"
    (docs / "a").mkdir(parents=True)
    (docs / "a" / "readme.txt").write_text("not a host\n")
    p = run_cli("preflight", "--root", str(_tar(tmp_path / "notes.tar.gz", docs, "notes")))
    assert p.returncode == 2 and "no host tree" in p.stderr and "notes/a" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    # the cap, lowered here to 1 MiB (the real one is 1 GiB: a 9 MB file once declared 1.8 GB of members)
    big = tmp_path / "big" / "sys"
    big.mkdir(parents=True)
    (big / "blob").write_bytes(bytes(2 << 20))
    monkeypatch.setattr(rootmod, "MAX_UNPACK_BYTES", 1 << 20)
    p = run_cli("preflight", "--root", str(_tar(tmp_path / "big.tar.gz", big.parent, "big")))
    assert p.returncode == 2 and "MiB" in p.stderr and "sys/blob" in p.stderr, p.stderr
