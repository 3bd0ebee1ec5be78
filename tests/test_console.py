"""The preflight console: one line per gate that fits the terminal, details wrapped on word boundaries.

The real check is in a real terminal: tmux runs the real CLI in a pane of 80 and of 160 columns, and the
test reads the pane back (capture-pane) and compares it with the evidence the same run wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, require_module, require_tool
from rdmacheck.evidence.model import Result, Status
from rdmacheck.output.console import detail_lines, shorten, summary_lines, verdict_line

EXAMPLE = REPO / "docker" / ".env.example"


def _norm(token: str) -> str:
    return token.rstrip(",;:")


def test_shorten_cuts_between_words_and_fits():
    text = "NCCL_SOCKET_IFNAME=enP2p1s0f0np0 matches no interface (have docker0, eth0, lo)"
    for width in range(8, len(text) + 2):
        s = shorten(text, width)
        assert len(s) <= width
        words = [w for w in s.split() if w != "..."]
        assert all(_norm(w) in {_norm(t) for t in text.split()} for w in words), (width, s)
    assert shorten(text, len(text)) == text


def test_summary_and_details_fit_and_never_split_a_word():
    long_id = Result("nccl.env", Status.FAIL, observed="x " * 30 + "NCCL_SOCKET_IFNAME=enP2p1s0f0np0 " * 4,
                     expected="env consistent with 192.168.100.0/24", remedy="set-GLOO_SOCKET_IFNAME " * 10)
    ok = Result("rdma.gid", Status.PASS, observed="[1] 192.168.100.1 RoCE v2", expected="a RoCE v2 GID")
    for width in (40, 80, 160):
        lines = [line for _, line in summary_lines([long_id, ok], width)] + detail_lines(long_id, width)
        assert all(len(line) <= width for line in lines), width
        if width < 12 + len("NCCL_SOCKET_IFNAME=enP2p1s0f0np0"):
            continue  # a word wider than the room left beside the label is the one thing that must break
        tokens = {_norm(t) for r in (long_id, ok) for t in f"{r.id} {r.observed} {r.expected} {r.remedy}".split()}
        tokens |= {"FAIL", "PASS", "observed", "expected", "remedy", "..."}
        assert {_norm(t) for line in lines for t in line.split()} <= tokens, width
    assert verdict_line([long_id, ok]) == ("FAIL", "1 pass, 0 warn, 1 fail, 0 skip")


def _tmux(tmp_path, columns: int, args: str, tag: str, guard_s: float = 240) -> tuple[list[str], str]:
    """Run the real `rdmacheck ARGS` in a tmux pane ``columns`` wide; (pane lines, its exit code)."""
    sock = f"rc-{uuid.uuid4().hex[:8]}"
    done = tmp_path / f"rc-{tag}{columns}"
    cmd = (f"cd {REPO} && env -u COLUMNS -u LINES -u NO_COLOR PYTHONPATH={REPO} {sys.executable} -m rdmacheck "
           f"{args}; echo $? > {done}; sleep 300")
    conf = tmp_path / "tmux.conf"
    conf.write_text("")  # no user or system configuration: the pane is exactly the size asked for
    tmux = ["tmux", "-L", sock, "-f", str(conf)]
    subprocess.run([*tmux, "new-session", "-d", "-s", "t", "-x", str(columns), "-y", "50", cmd],
                   check=True, timeout=30, env={**os.environ, "TERM": "xterm"})
    try:
        subprocess.run([*tmux, "set-option", "-t", "t", "history-limit", "5000"], timeout=30)
        deadline = time.monotonic() + guard_s  # hang guard, not a speed goal
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert done.exists(), f"rdmacheck {args} did not finish in the tmux pane"
        width = subprocess.run([*tmux, "display-message", "-p", "-t", "t", "#{pane_width}"], capture_output=True,
                               text=True, timeout=30).stdout.strip()
        assert width == str(columns)
        # -J joins lines the terminal wrapped, so a line wider than the pane shows up as one long line
        pane = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-", "-t", "t"], capture_output=True,
                              text=True, timeout=30, check=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
    lines = [line.rstrip() for line in pane.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines, done.read_text().strip()


def _tmux_preflight(tmp_path, columns: int) -> tuple[list[str], dict]:
    """Run the real `rdmacheck preflight` in a tmux pane ``columns`` wide; (pane lines, the run's evidence)."""
    out = tmp_path / f"pf{columns}.json"
    lines, rc = _tmux(tmp_path, columns, f"preflight --env {EXAMPLE} --json {out}", "pf")
    assert rc in ("0", "1")
    return lines, json.loads(out.read_text())


def test_table_choice_follows_the_terminal():
    """auto: compact only on a real terminal (a pty here) narrower than nccl-tests' 118-column row; a pipe or
    file always gets nccl-tests' layout; --table forces either."""
    from rdmacheck.bench.table import NCCL_TESTS_WIDTH, compact_row, row_line, use_compact

    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty, os.fdopen(master, "r"), open(os.devnull, "w") as pipe_like:
        assert use_compact("auto", tty, columns=80) and use_compact("auto", tty, columns=NCCL_TESTS_WIDTH - 1)
        assert not use_compact("auto", tty, columns=NCCL_TESTS_WIDTH) and not use_compact("auto", tty, columns=160)
        assert not use_compact("auto", pipe_like, columns=80)
        assert use_compact("compact", pipe_like) and not use_compact("nccl-tests", tty, columns=80)

    class Row:  # the plan row's fields the table reads
        nbytes, count, dtype, redop, root = 1 << 30, 1 << 28, "float", "sum", -1

    rec = {"time_us": 3262.19, "algbw": 329.15, "busbw": 329.15, "wrong": 0}
    assert len(row_line(Row, {False: rec, True: rec})) == NCCL_TESTS_WIDTH
    assert len(compact_row(Row, {False: rec, True: rec})) == 77   # what --help and docs/bench.md promise


@pytest.mark.parametrize("columns", [80])
def test_bench_table_fits_the_terminal(tmp_path, columns):
    """A real 2-rank gloo bench in a pane of 80 columns: the compact table, every line fits, and the rows
    carry the sizes and busbw the evidence of the same run holds."""
    require_tool("tmux", "tmux")
    require_module("torch")
    out = tmp_path / f"b{columns}.json"
    lines, rc = _tmux(tmp_path, columns, f"bench --backend gloo --nproc 2 --sizes 1K..64K --op all_gather "
                                         f"--expect-busbw 0 --json {out}", "bench", guard_s=300)
    assert rc == "0", lines[-15:]
    recs = json.loads(out.read_text())["records"]
    sizes = sorted({r["bytes"] for r in recs})
    rows = [line for line in lines if line and not line.startswith("#") and line.split()[0].replace(".", "").isdigit()]
    assert len(rows) == len(sizes), rows
    if columns <= 80:
        assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
        assert any(line.startswith("#") and "out-of-place" in line and "in-place" in line for line in lines)
        from rdmacheck.util.units import human_bytes

        assert [" ".join(r.split()[:2]) for r in rows] == [human_bytes(n) for n in sizes], rows
        # all_gather runs both variants: each row holds out-of-place then in-place busbw, as the evidence has it
        for r, n in zip(rows, sizes):
            cols = r.split()
            by = {x["in_place"]: x for x in recs if x["bytes"] == n}
            assert float(cols[4]) == pytest.approx(by[False]["busbw"], abs=0.006, rel=0.01), (r, by[False])
            assert float(cols[8]) == pytest.approx(by[True]["busbw"], abs=0.006, rel=0.01), (r, by[True])


@pytest.mark.parametrize("columns", [80, 160])
def test_preflight_in_a_real_terminal(tmp_path, columns):
    require_tool("tmux", "tmux")
    lines, ev = _tmux_preflight(tmp_path, columns)
    results = ev["results"]
    assert lines, "empty pane"
    # no line wider than the pane
    assert max(len(line) for line in lines) <= columns, [line for line in lines if len(line) > columns]
    # one line per gate first (after the title), every gate present, in order, with its status
    labels = {r["id"]: ("WAIVED" if r.get("waiver") and r["status"] == "fail" else r["status"].upper()) for r in results}
    summary = lines[1:1 + len(results)]
    assert [line.split()[:2] for line in summary] == [[r["id"], labels[r["id"]]] for r in results], summary
    assert lines[1 + len(results)] == ""
    # each gate that did not pass has its details block: observed/expected/remedy
    pending = [r for r in results if r["status"] != "pass"]
    heads = [line for line in lines if line and not line.startswith(" ") and len(line.split()) == 2
             and line.split()[0] in labels and line.split()[1] in labels.values() and line not in summary]
    assert [h.split()[0] for h in heads] == [r["id"] for r in pending]
    # no word split: every word on screen is a whole word of the evidence (or a label of the layout)
    verdict = "FAIL" if any(r["status"] == "fail" and not r.get("waiver") for r in results) else "PASS"
    words = {_norm(t) for r in results for k in ("id", "observed", "expected", "remedy") for t in str(r.get(k) or "").split()}
    words |= {_norm(t) for t in lines[0].split()}  # the title (host name)
    words |= set(labels.values()) | {verdict, "observed", "expected", "remedy", "waived", "...", "pass", "warn", "fail", "skip"}
    words |= {str(i) for i in range(len(results) + 1)}
    stray = [t for line in lines for t in line.split() if _norm(t) not in words]
    assert not stray, stray[:20]
    assert lines[-1].startswith(f"{verdict}: ")


def test_verdict_line_is_the_exit_codes_rule():
    """A gate that could not be judged exits 1: the console's last line must not say PASS beside it."""
    from rdmacheck.evidence.model import could_not_judge, exit_code

    results = [Result("rdma.devices", Status.PASS, observed="one"),
               could_not_judge("rdma.port", "the state of roceP2p1s0f0:1 could not be read")]
    assert exit_code(results) == 1
    assert verdict_line(results) == ("FAIL", "1 pass, 0 warn, 0 fail, 1 skip")
    assert verdict_line(results[:1])[0] == "PASS"
