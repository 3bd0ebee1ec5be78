"""The hostile-input harness (issue 26): over 1,000 generated command lines through ``rdmacheck.cli.main``.

In-process (a subprocess start costs ~0.3 s on CI's 2 cores; these calls cost 10-100 ms) and serial.  The
categories: mutated --facts records, hostile snapshot metadata (rdmacheck/*.json of a --root tree), hostile
.env files, mutated evidence into ``report``, hostile nccl-tests text, odd numbers for the duration/size
flags, odd output paths, and planted bugs.  Every case asserts:

- no traceback on stdout or stderr, and no hang (each case has a 20 s alarm);
- exit 3 (and a crash report) only where a bug was planted, and always there;
- no clobbered output: on exit 2/3 every output file that existed keeps its bytes; on exit 0/1 it is the
  old bytes or a whole new document;
- no PASS by accident: exit 0 only when the evidence it wrote has no FAIL and no gate it could not judge
  (preflight), and, for ``report``, only when every file judged something and its own status agrees.

The counts by category and exit code, and the time, are printed at the end.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import random
import signal
import time
from pathlib import Path

import pytest

from conftest import REPO
from fail_closed_util import print_counts
from rdmacheck.cli import main
from sysfs_builder import roce_tree

SOFTROCE = json.loads((REPO / "tests" / "data" / "softroce-preflight.json").read_text())
JUNK = [None, 0, 1, -1, 1.5, float("1e308"), "x", "", "\x1b[2J", "é\udcff"[:1], [], {}, [1], {"a": 1}, True,
        10 ** 30, ["x"], {"1": None}, [[1]], "../../etc/passwd", "a" * 300]
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
TIME: dict[str, float] = collections.defaultdict(float)
SENTINEL = b"an output that existed before this run\n"


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


class Harness:
    def __init__(self, tmp: Path, monkeypatch):
        self.tmp = tmp
        self.state = tmp / "state"
        monkeypatch.setenv("XDG_STATE_HOME", str(self.state))
        monkeypatch.setenv("NO_COLOR", "1")
        self.n = 0

    def run(self, category: str, argv: list[str], outputs: list[Path] = (), planted: bool = False,
            json_out: Path | None = None, report: list[dict] | None = None) -> int:
        self.n += 1
        for o in outputs:
            if o.parent.is_dir() and not o.exists():
                o.write_bytes(SENTINEL)
        before = {o: o.read_bytes() if o.is_file() else None for o in outputs}
        crashes = set(self.state.rglob("crash-*")) if self.state.exists() else set()
        out, err = io.StringIO(), io.StringIO()
        hung = False
        t0 = time.monotonic()
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(20)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
        except Hang:
            hung, rc = True, -1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        what = f"[{category}] rdmacheck {' '.join(a[:60] for a in argv)[:300]} -> {rc}\n{err.getvalue()[-1200:]}"
        COUNTS[category][rc] += 1
        TIME[category] += time.monotonic() - t0
        hung = hung or time.monotonic() - t0 >= 20   # main() turns the alarm into exit 3: the clock says it
        assert not hung and "still running" not in what, what
        assert "Traceback" not in out.getvalue() + err.getvalue(), what
        if not planted:
            # a gate that raises becomes a FAIL naming "probe error" (preflight.judge): on foreign input that
            # would be a crash hidden in a verdict, so it counts as one here
            written = json_out.read_text(errors="replace") if json_out is not None and json_out.is_file() else ""
            assert "probe error" not in out.getvalue() + err.getvalue() + written, what
        new_crashes = (set(self.state.rglob("crash-*")) if self.state.exists() else set()) - crashes
        if planted:
            assert rc == 3 and "crash report: " in err.getvalue(), what
            return rc
        assert rc in (0, 1, 2), what
        assert not new_crashes, what
        for o, b in before.items():
            now = o.read_bytes() if o.is_file() else None
            if rc in (2, 3):
                assert now == b, f"{what}\n{o} changed although the run failed"
            elif now != b and now is not None:   # a whole new document, never half of one
                text = now.decode("utf-8", "replace").strip()
                if text.startswith("{"):
                    json.loads(text)
                else:
                    assert text.endswith(("</html>", "</testsuites>")), f"{what}\n{o} holds part of a document"
        if rc == 2:
            assert err.getvalue().startswith("rdmacheck: error: "), what
        if (json_out is not None and rc in (0, 1) and json_out.is_file() and json_out.read_bytes() != SENTINEL
                and json_out.read_bytes() != before.get(json_out)):
            results = json.loads(json_out.read_text())["results"]
            failing = [r for r in results if r["status"] == "fail" and not r.get("waiver")]
            unjudged = [r for r in results if r["status"] == "skip" and (r.get("details") or {}).get("unjudged")]
            assert (rc == 0) == (not failing and not unjudged), f"{what}\nexit {rc} disagrees with its evidence"
        if report is not None and rc == 0:
            for d in report:   # a PASS page: every document judged something, and says so itself
                res = d.get("results") or []
                assert res and all(r.get("status") in ("pass", "warn", "skip") for r in res), what
                assert d.get("status") in (None, "pass", "warn", "skip"), what
                assert not any((r.get("details") or {}).get("unjudged") for r in res), what
        return rc


def _paths(o, p=()):
    yield p
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _paths(v, p + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o[:3]):
            yield from _paths(v, p + (i,))


def _mutate(doc, rnd: random.Random, n: int = 3):
    x = copy.deepcopy(doc)
    every = [p for p in _paths(x) if p]
    for _ in range(rnd.randint(1, n)):
        p = rnd.choice(every)
        o = x
        try:
            for k in p[:-1]:
                o = o[k]
            if isinstance(o, dict) and rnd.random() < 0.15:
                del o[p[-1]]
            else:
                o[p[-1]] = rnd.choice(JUNK)
        except (KeyError, IndexError, TypeError):
            pass
    return x


def _junk(rnd: random.Random, d: int = 0):
    c = rnd.randrange(9 if d < 3 else 6)
    if c < 6:
        return rnd.choice(JUNK[:10])
    if c == 6:
        return [_junk(rnd, d + 1) for _ in range(rnd.randrange(3))]
    keys = ["addrs", "answer", "ipv4", "ipv6", "error", "host", "devices", "ports", "json", "lo", "enP2p1s0f0np0",
            "resolve:192.168.100.1", "dcb.app:enP2p1s0f0np0", "verbs", "elapsed_s", "state", "1", "app", "pfc",
            "NCCL_IB_HCA", "size", "version", "library"]
    return {rnd.choice(keys): _junk(rnd, d + 1) for _ in range(rnd.randrange(4))}


def _env_text(rnd: random.Random) -> str:
    keys = ["NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "NCCL_IB_GID_INDEX", "NCCL_IB_TC", "NCCL_IB_SL", "NCCL_IB_TIMEOUT",
            "NCCL_IB_ADDR_RANGE", "NCCL_IB_ADDR_FAMILY", "MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "NCCL_IB_DISABLE",
            "GLOO_SOCKET_IFNAME", "NCCL_NET_GDR_LEVEL", "RAY_ADDRESS", "export X", "1BAD", ""]
    vals = ["^", "^=", "=roceP2p1s0f0:1:0", "roceP2p1s0f0, x", "-1", "0x10", "99999999999999999999", "192.168.100.0",
            "192.168.100.0/24", "'unterminated", '"x\\"', "`cmd`", "\x1b]0;t\x07", "é", "0", "", " ", "a" * 500,
            "spark-01-mesh", "256", "AF_INET6"]
    lines = [f"{rnd.choice(keys)}={rnd.choice(vals)}" for _ in range(rnd.randint(1, 6))]
    if rnd.random() < 0.1:
        lines.append("\x00=\x00")
    return "\n".join(lines) + ("\n" if rnd.random() < 0.8 else "")


NCCL_ROWS = ["#  size count type redop root time algbw busbw #wrong time algbw busbw #wrong",
             "        1024 256 float sum -1 10.1 0.10 0.18 0 10.0 0.10 0.18 0",
             "    67108864 16777216 float sum -1 5123 13.10 24.56 0 5100 13.16 24.67 0"]


def _nccl_text(rnd: random.Random) -> str:
    rows = []
    for _ in range(rnd.randint(1, 5)):
        r = rnd.choice(NCCL_ROWS).split()
        if rnd.random() < 0.6 and r:
            i = rnd.randrange(len(r))
            r[i] = rnd.choice(["9" * 400, "nan", "inf", "-1", "1e999", "", "…", "N/A", "0x10", "\x1b[2J", "1" * 25])
        rows.append("  ".join(r))
    if rnd.random() < 0.5:
        rows.append("# Avg bus bandwidth    : " + rnd.choice(["1.5", "nan", "x", "9" * 400]))
    return "\n".join(rows) + "\n"


def test_hostile_inputs_harness(tmp_path, monkeypatch, request):
    rnd = random.Random(2626)
    h = Harness(tmp_path, monkeypatch)
    t0 = time.monotonic()
    tree = roce_tree(tmp_path / "tree")
    meta = tree / "rdmacheck"
    meta.mkdir(exist_ok=True)
    js = tmp_path / "out" / "ev.json"
    js.parent.mkdir()

    # 1. mutated --facts records
    f = tmp_path / "facts.json"
    for _ in range(260):
        doc = copy.deepcopy(SOFTROCE)
        doc["context"]["node_facts"] = _mutate(doc["context"]["node_facts"], rnd)
        f.write_text(json.dumps(doc))
        h.run("facts", ["preflight", "--facts", str(f), "--json", str(js)], [js], json_out=js)

    # 2. hostile snapshot metadata
    names = ["addrs.json", "probes.json", "host.json", "env.json", "verbs.json", "dcb.json", "nvml.json"]
    for _ in range(220):
        for n in names:
            (meta / n).unlink(missing_ok=True)
        for n in rnd.sample(names, rnd.randint(1, 4)):
            body = _junk(rnd)
            (meta / n).write_text(json.dumps(body) if rnd.random() < 0.9 else "{not json")
        h.run("snapshot-meta", ["preflight", "--root", str(tree), "--json", str(js)], [js], json_out=js)
    for n in names:
        (meta / n).unlink(missing_ok=True)

    # 3. hostile .env files
    env = tmp_path / "node.env"
    for _ in range(200):
        env.write_bytes(_env_text(rnd).encode("utf-8", "surrogateescape"))
        h.run("env", ["preflight", "--root", str(tree), "--env", str(env), "--json", str(js)], [js, env],
              json_out=js)

    # 4. mutated evidence into report (the --junit and -o outputs exist before)
    ev, html, junit = tmp_path / "ev-in.json", tmp_path / "out" / "r.html", tmp_path / "out" / "j.xml"
    for i in range(100):
        doc = _mutate(SOFTROCE, rnd, 4)
        if i % 7 == 0:
            doc["results"] = []
        if i % 11 == 0:
            doc["kind"] = rnd.choice(["bench", "launch", "cluster"])
        if i % 13 == 0:
            doc["status"] = rnd.choice(["fail", "pass", "green", None])
        ev.write_text(json.dumps(doc))
        h.run("report", ["report", str(ev), "-o", str(html), "--junit", str(junit)], [html, junit, ev],
              report=[doc])

    # 5. hostile nccl-tests text: the importer in-process for most (a page with plots costs seconds of
    # matplotlib on CI's machine), the whole `report --import` for some
    from rdmacheck.util.errors import UsageError
    from rdmacheck.importers import read_run

    nt = tmp_path / "all_reduce_perf.txt"
    for i in range(60):
        nt.write_text(_nccl_text(rnd))
        if i % 10 == 0:
            h.run("nccl-tests", ["report", "--import", str(nt), "-o", str(html)], [html, nt])
            continue
        t1 = time.monotonic()
        try:
            run = read_run(str(nt))
            outcome = "read"
            for rec in run.records:   # what the report plots: finite numbers, a byte count within int64
                assert 0 <= rec["bytes"] < 1 << 63
                assert all(rec[k] is None or rec[k] == rec[k] for k in ("busbw", "algbw", "time_us"))
        except UsageError as e:
            outcome = "usage-error"
            assert str(e).strip()
        COUNTS["nccl-tests (importer)"][outcome] += 1
        TIME["nccl-tests (importer)"] += time.monotonic() - t1

    # 6. numbers for the duration/size/bandwidth flags (all refused or judged before any wait or rank)
    nums = ["nan", "inf", "-inf", "-1", "0", "1e309", "9" * 400, "1e-9", "0x10", "1_0", "", " ", "１", "5", "1.5"]
    for _ in range(120):
        v = rnd.choice(nums)
        argv = rnd.choice([
            ["counters", "--before", str(tree), "--after", str(tree), "--seconds", v],
            ["preflight", "--root", str(tree), "--expect", f"mtu={v}", "--json", str(js)],
            ["preflight", "--root", str(tree), "--expect", f"min_busbw={v}", "--json", str(js)],
            ["report", str(REPO / "tests" / "data" / "softroce-preflight.json"), "--expected-busbw", v, "-o", str(html)],
            # (only values refused before any rank starts: a valid one would run a real sweep here)
            ["bench", "--nproc", rnd.choice(["0", "-1", "1000", "99999999999", "nan", "x", ""]), "--sizes", "1K"],
            ["bench", "--sizes", rnd.choice([v, f"{v}..1K", f"1K..{v}"]), "--timeout", "nan"],
            ["watch", "--interval", rnd.choice(["nan", "inf", "-1", "0", "0.5", "1e309"])],
        ])
        h.run("numbers", argv, [js, html], json_out=js if "--json" in argv else None)

    # 7. odd output paths
    (tmp_path / "adir").mkdir()
    paths = [str(tmp_path / "adir"), "/dev/null", "/dev/full", "/proc/self/status", str(tmp_path / "no" / "such" / "x.json"),
             str(env), str(tmp_path / "out"), "", str(tmp_path / "adir" / ".."), str(js)]
    for _ in range(60):
        p = rnd.choice(paths)
        argv = rnd.choice([["preflight", "--root", str(tree), "--env", str(env), "--json", p],
                           ["report", str(REPO / "tests" / "data" / "softroce-preflight.json"), "-o", p, "--junit", str(junit)],
                           ["report", str(REPO / "tests" / "data" / "softroce-preflight.json"), "-o", str(html), "--junit", p]])
        env.write_text("NCCL_IB_HCA=roceP2p1s0f0\n")
        h.run("output-paths", argv, [env, junit, html, js])

    # 8. planted bugs: rdmacheck's own code raising is exit 3 with a crash report (and only these are)
    import rdmacheck.output.console as console
    import rdmacheck.preflight.judge as judging

    def boom(*a, **k):
        raise RuntimeError("planted bug")

    for i in range(12):
        target, name = (judging, "judge") if i % 2 else (console, "render_results")
        with monkeypatch.context() as m:
            m.setattr(target, name, boom)
            h.run("planted-bug", ["preflight", "--root", str(tree)], planted=True)

    took = time.monotonic() - t0
    total = sum(sum(c.values()) for c in COUNTS.values())
    lines = [f"{k}: {sum(c.values())} cases in {TIME[k]:.1f} s, by outcome "
             + ", ".join(f"{e}: {n}" for e, n in sorted(c.items())) for k, c in sorted(COUNTS.items())]
    lines.append(f"all: {total} cases in {took:.1f} s; 0 tracebacks, 0 hangs, 0 clobbered outputs, "
                 f"exit 3 only for {sum(COUNTS['planted-bug'].values())} planted bugs")
    print_counts(request, "hostile harness", "\n".join(lines))
    assert total >= 1000
    assert COUNTS["planted-bug"][3] >= 1
