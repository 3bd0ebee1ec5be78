"""The user's input and the machine's state are exit 2 (or 1), one line; exit 3 stays for rdmacheck's bugs.

(issue 26) Each case below was exit 3 ("a bug, please report it"): a fuzzed --facts record (NodeFacts.from_dict
let TypeError/AttributeError escape), hostile snapshot metadata (rdmacheck/addrs.json, probes.json), a full
disk, a non-UTF-8 stdout, ``watch --interval inf``, a 400-digit nccl-tests row, ``--hook os:getcwd``; and
``counters --seconds -1`` printed negative rates, ``preflight --json my.env --env my.env`` replaced the .env.
"""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from rdmacheck.cli import main
from sysfs_builder import roce_tree

SOFTROCE = REPO / "tests" / "data" / "softroce-preflight.json"
JUNK = [None, 1, -1, 1.5, "x", "", [], {}, [1], {"a": 1}, True, 10 ** 30, ["x"], {"1": None}, [[1]]]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.err


def _one_line_error(rc: int, err: str, code: int = 2) -> None:
    assert rc == code, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("rdmacheck: error: "), err


def _paths(o, p=()):
    yield p
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _paths(v, p + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o[:3]):
            yield from _paths(v, p + (i,))


def _mutate(doc: dict, rnd: random.Random, root: tuple) -> dict:
    x = copy.deepcopy(doc)
    base = x
    for k in root:
        base = base[k]
    every = [p for p in _paths(base) if p]
    for _ in range(rnd.randint(1, 3)):
        p = rnd.choice(every)
        o = base
        try:
            for k in p[:-1]:
                o = o[k]
            o[p[-1]] = rnd.choice(JUNK)
        except (KeyError, IndexError, TypeError):
            pass
    return x


def test_fuzzed_facts_records_are_input_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    doc = json.loads(SOFTROCE.read_text())
    rnd = random.Random(26)
    f = tmp_path / "facts.json"
    seen = {0: 0, 1: 0, 2: 0}
    for _ in range(400):
        f.write_text(json.dumps(_mutate(doc, rnd, ("context", "node_facts"))))
        rc, err = _run(["preflight", "--facts", str(f)], capsys)
        assert rc in (0, 1, 2), err
        if rc == 2:
            _one_line_error(rc, err)
        seen[rc] += 1
    assert seen[2] > 100 and seen[1] > 20, seen   # both outcomes exercised
    assert not (tmp_path / "state").exists()      # no crash report


@pytest.mark.parametrize("name,body", [
    ("addrs.json", {"enP2p1s0f0np0": {"ipv4": [["192.168.100.1/24"]]}}),
    ("addrs.json", {"enP2p1s0f0np0": {"ipv4": {"a": 1}}}),
    ("addrs.json", [1, 2]),
    ("probes.json", {"addrs": {"answer": {"lo": {"ipv6": [True]}}}}),
    ("probes.json", {"resolve:192.168.100.1": {"answer": {"addrs": 5}, "error": 7, "elapsed_s": "slow"}}),
    ("probes.json", {"verbs": {"answer": {"devices": {"roceP2p1s0f0": 3}}}}),
    ("probes.json", {"dcb.pfc:enP2p1s0f0np0": {"answer": {"json": None, "error": ["x"]}}}),
    ("probes.json", {"nccl_lib": {"answer": "2.21"}, "shm": {"answer": {"size": "big"}}}),
    ("host.json", {"host": {"nested": ["x"]}}),
])
def test_hostile_snapshot_metadata_is_judged_not_crashed(tmp_path, capsys, monkeypatch, name, body):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    tree = roce_tree(tmp_path / "t")
    (tree / "rdmacheck").mkdir(exist_ok=True)
    (tree / "rdmacheck" / name).write_text(json.dumps(body))
    rc, err = _run(["preflight", "--root", str(tree)], capsys)
    assert rc in (0, 1), err
    assert not (tmp_path / "state").exists()


def _subprocess(args: list[str], env: dict | None = None, preexec=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    return subprocess.run([sys.executable, "-m", "rdmacheck", *args], capture_output=True, text=True, timeout=120,
                          env=e, cwd=REPO, preexec_fn=preexec, errors="replace")


def test_full_disk_on_the_evidence_is_one_line_and_keeps_the_old_file(tmp_path):
    """RLIMIT_FSIZE makes every write past 4 KiB fail with EFBIG, as a full disk fails with ENOSPC: the kernel
    refuses the write, no mount needed."""
    out = tmp_path / "ev.json"
    out.write_text("old evidence\n")

    def small():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    p = _subprocess(["preflight", "--root", str(roce_tree(tmp_path / "t")), "--json", str(out)],
                    env={"XDG_STATE_HOME": str(tmp_path / "state")}, preexec=small)
    _one_line_error(p.returncode, p.stderr)
    assert "cannot write" in p.stderr and out.read_text() == "old evidence\n"
    assert not list(tmp_path.glob(".ev.json.*"))          # no temp file left


def test_full_stdout_is_exit_1_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "rdmacheck", "preflight", "--root", str(roce_tree(tmp_path / "t"))],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=str(REPO), XDG_STATE_HOME=str(tmp_path / "state")))
    _one_line_error(p.returncode, p.stderr, code=1)
    assert "No space left on device" in p.stderr


def test_non_utf8_stdout_escapes_instead_of_crashing(tmp_path):
    env_file = tmp_path / "u.env"
    env_file.write_bytes("NCCL_IB_HCA=é€\nNCCL_SOCKET_IFNAME=ü\n".encode())
    js = tmp_path / "ev.json"
    p = _subprocess(["preflight", "--root", str(roce_tree(tmp_path / "t")), "--env", str(env_file), "--json", str(js)],
                    env={"PYTHONIOENCODING": "ascii", "XDG_STATE_HOME": str(tmp_path / "state")})
    assert p.returncode in (0, 1), p.stderr
    assert "internal error" not in p.stderr and js.is_file()


@pytest.mark.parametrize("argv,needle", [
    (["watch", "--interval", "inf"], "--interval"),
    (["watch", "--interval", "nan"], "--interval"),
    (["counters", "--before", ".", "--after", ".", "--seconds", "-1"], "--seconds"),
    (["counters", "--before", ".", "--after", ".", "--seconds", "nan"], "--seconds"),
    (["bench", "--backend", "gloo", "--sizes", "1K", "--hook", "os:getcwd"], "cannot be called as getcwd(hooks)"),
])
def test_flags_refused_in_one_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    rc, err = _run(argv, capsys)
    _one_line_error(rc, err)
    assert needle in err


def test_400_digit_nccl_tests_row(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    f = tmp_path / "big.txt"
    f.write_text("#  size count type redop root time algbw busbw #wrong time algbw busbw #wrong\n"
                 f"  {'9' * 400} 2 float sum -1 1.0 1.0 1.0 0 1.0 1.0 1.0 0\n")
    rc, err = _run(["report", "--import", str(f), "-o", str(tmp_path / "r.html")], capsys)
    _one_line_error(rc, err)
    # the same number in evidence JSON
    doc = {"schema_version": 2, "tool": "rdmacheck", "kind": "bench", "host": "h", "time": "t", "context": {},
           "results": [], "records": [{"op": "all_reduce", "bytes": int("9" * 400), "busbw": 1.0}]}
    (tmp_path / "b.json").write_text(json.dumps(doc))
    rc, err = _run(["report", str(tmp_path / "b.json"), "-o", str(tmp_path / "r.html")], capsys)
    _one_line_error(rc, err)
    assert "out of range" in err


def test_output_over_its_own_input_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = tmp_path / "my.env"
    env.write_text("NCCL_IB_HCA=roceP2p1s0f0\n")
    rc, err = _run(["preflight", "--root", str(roce_tree(tmp_path / "t")), "--json", str(env), "--env", str(env)], capsys)
    _one_line_error(rc, err)
    assert "would overwrite --env" in err and env.read_text() == "NCCL_IB_HCA=roceP2p1s0f0\n"
    ev = tmp_path / "ev.json"
    ev.write_text(SOFTROCE.read_text())
    rc, err = _run(["report", str(ev), "-o", str(ev)], capsys)
    _one_line_error(rc, err)
    assert ev.read_text() == SOFTROCE.read_text()
