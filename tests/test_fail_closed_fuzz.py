"""Fail closed, generated: hypothesis inputs into every parser in-process, and a bounded sample through the CLI.

In-process (cheap, hundreds of inputs each): sizes, bandwidths, byte sizes, durations, .env files,
profiles, evidence JSON, nccl-tests text and JSON, output paths.  Each must either give a sane value
(finite, in range) or raise UsageError (exit 2); nothing else may escape.

Through the CLI (a subprocess start costs ~0.3 s on this 2-core machine, so a few dozen runs):
bench flags, preflight with generated .env/profile files and odd sysfs trees (--root), report over
generated evidence and nccl-tests files, and odd output paths; judged by fail_closed_util.judge
(exit code, no traceback, bounded time, pre-existing outputs unchanged on exit 2).

The counts of inputs tried, by outcome and by exit code, are printed at the end of the module.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from fail_closed_util import judge, print_counts
from rdmacheck.bench.sizes import MAX_SIZE, parse_sizes
from rdmacheck.config import load_env_file, load_profile, parse_bandwidth, parse_bytes
from rdmacheck.util.errors import UsageError
from rdmacheck.importers import read_run
from rdmacheck.util.outpath import check_output_path
from rdmacheck.report.load import read_one
from rdmacheck.util.units import seconds_type
from sysfs_builder import roce_tree

SOFTROCE_PREFLIGHT = REPO / "tests" / "data" / "softroce-preflight.json"
NCCL_JSON = REPO / "tests" / "data" / "nccl-tests" / "all_reduce_perf-J.json"
CAPTURES = REPO.parent / "shared" / "captures" / "text"

TRIED: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
def fast(n: int) -> settings:
    return settings(deadline=None, max_examples=n,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request):
    yield
    lines = [f"in-process {k}: {sum(c.values())} inputs, " + ", ".join(f"{o}: {n}" for o, n in sorted(c.items()))
             for k, c in sorted(TRIED.items())]
    total = sum(sum(c.values()) for c in TRIED.values())
    lines.append(f"in-process all: {total} inputs")
    print_counts(request, "fail-closed fuzz", "\n".join(lines))


def outcome(kind: str, fn, *a, **kw):
    """Call a parser; count 'value' or 'usage-error'; anything else fails the test."""
    try:
        v = fn(*a, **kw)
    except UsageError as e:
        TRIED[kind]["usage-error"] += 1
        assert str(e).strip()  # (one line on the terminal: the CLI prints it through sanitize.clean_text)
        return None
    TRIED[kind]["value"] += 1
    return v


# ---------------------------------------------------------------------------------------------
# numbers
SIZE_TOKEN = st.one_of(st.integers(-5, 2 ** 70).map(str), st.sampled_from(["1K", "64M", "1G", "1T", "2T", "0", "K", "1e3",
                                                                           "nan", "inf", "-1K", "8MiB", " 4 kb", "１K"]))
SIZES = st.one_of(st.text(max_size=30),
                  st.lists(SIZE_TOKEN, min_size=1, max_size=5).map(",".join),
                  st.tuples(SIZE_TOKEN, SIZE_TOKEN).map("..".join))


@fast(100)
@given(text=SIZES, factor=st.integers(-2, 1000))
def test_sizes(text, factor):
    v = outcome("sizes", parse_sizes, text, factor)
    if v is not None:
        assert v and all(isinstance(n, int) and 1 <= n <= MAX_SIZE for n in v) and v == sorted(v)


NUMBERISH = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10 ** 400), st.booleans(),
                      st.text(max_size=20), st.sampled_from(["nan", "inf", "-inf", "1e400", "12GB/s", "-3", "0",
                                                             "9" * 500, "12.5 GB/s", "64MiB", "1G"]))


@fast(100)
@given(v=NUMBERISH)
def test_bandwidths_and_byte_sizes(v):
    bw = outcome("bandwidth", parse_bandwidth, v, "--expect-busbw")
    if bw is not None:
        assert math.isfinite(bw) and bw >= 0
    n = outcome("bytes", parse_bytes, v, "--max-memory")
    if n is not None:
        assert isinstance(n, int) and 0 <= n <= 1 << 50


@fast(150)
@given(v=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12),
                   st.sampled_from(["nan", "inf", "-1", "0", "1e400", "86401", "0.5"])))
def test_durations(v):
    s = outcome("seconds", seconds_type("--timeout"), v)
    if s is not None:
        assert math.isfinite(s) and 0 < s <= 86400


# ---------------------------------------------------------------------------------------------
# files
ENV_LINE = st.one_of(
    st.text(max_size=80),
    st.tuples(st.sampled_from(["NCCL_IB_HCA", "MASTER_ADDR", "export X", "1BAD", "A B", ""]),
              st.text(max_size=40)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["NCCL_IB_HCA='unterminated", 'A="x\\"', "A=`cmd`", "A='x' trailing", "\x00=\x00"]))


@fast(100)
@given(lines=st.lists(ENV_LINE, max_size=8), raw=st.binary(max_size=40), big=st.integers(0, 3))
def test_env_files(tmp_path_factory, lines, raw, big):
    p = tmp_path_factory.mktemp("env") / "x.env"
    body = ("\n".join(lines)).encode("utf-8", "surrogatepass") + raw
    if big == 3:
        body += b"\nNCCL_IB_HCA=" + b"y" * (70 * 1024)
    p.write_bytes(body)
    v = outcome("env-file", load_env_file, p)
    if v is not None:
        assert all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


PROFILE_KEYS = ["mtu", "active_mtu", "subnet", "roce_version", "memlock", "stack_min", "shm_min", "nodes",
                "gpus_per_node", "min_busbw", "plateau_min_bytes", "gpu_platform", "nope"]
TOML_VALUE = st.one_of(st.sampled_from(["nan", "inf", "-inf", "+nan", "1e400", "-1", "0", "true", "[]", "{}",
                                        '"12GB/s"', '"nan"', '"1G"', '"unlimited"', '"192.168.100.0/24"', "9000",
                                        "4096", '"x"', "1.5", "99999999999999999999999"]),
                       st.integers(-10, 10 ** 30).map(str), st.text(max_size=12).map(json.dumps))


@fast(120)
@given(items=st.dictionaries(st.sampled_from(PROFILE_KEYS), TOML_VALUE, max_size=5), junk=st.text(max_size=20))
def test_profiles(tmp_path_factory, items, junk):
    p = tmp_path_factory.mktemp("prof") / "p.toml"
    p.write_text("\n".join(f"{k} = {v}" for k, v in items.items()) + ("\n" + junk if junk.strip() else "") + "\n",
                 encoding="utf-8", errors="surrogatepass")
    prof = outcome("profile", load_profile, p)
    if prof is not None:
        assert math.isfinite(prof.min_busbw) and prof.min_busbw >= 0 and 0 <= prof.plateau_min_bytes <= 1 << 50


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False),
                      st.text(max_size=12))
JSON = st.recursive(JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c,
                                                                                               max_size=4)),
                    max_leaves=12)
EV_KEYS = ["kind", "host", "results", "context", "records", "time", "status", "schema_version", "tool"]


@fast(120)
@given(key=st.sampled_from(EV_KEYS), value=JSON, whole=st.booleans(), tail=st.binary(max_size=6))
def test_evidence_json(tmp_path_factory, key, value, whole, tail):
    base = json.loads(SOFTROCE_PREFLIGHT.read_text())
    doc = value if whole else {**base, key: value}
    p = tmp_path_factory.mktemp("ev") / "e.json"
    p.write_bytes(json.dumps(doc).encode() + (tail if tail.strip() else b""))
    outcome("evidence", read_one, p)


NCCL_KEYS = ["version", "args", "env", "nccl_version", "config", "results", "out_of_bounds", "average_bus_bandwidth",
             "errors", "start_time"]
ROW_KEYS = ["size", "count", "type", "root", "out_of_place", "in_place"]


@fast(150)
@given(key=st.sampled_from(NCCL_KEYS), value=JSON, row_key=st.sampled_from(ROW_KEYS), row_value=JSON,
       cut=st.integers(0, 50))
def test_nccl_tests_json(tmp_path_factory, key, value, row_key, row_value, cut):
    d = json.loads(NCCL_JSON.read_text())
    d[key] = value
    if isinstance(d.get("results"), list) and d["results"] and isinstance(d["results"][0], dict):
        d["results"][0][row_key] = row_value
    text = json.dumps(d)
    p = tmp_path_factory.mktemp("nj") / "run.json"
    p.write_text(text[: len(text) - cut] if cut > 45 else text)
    run = outcome("nccl-tests-json", read_run, p)
    if run is not None:
        assert all(isinstance(r["bytes"], int) and r["bytes"] >= 0 for r in run.records)


def _capture_lines() -> list[str]:
    files = sorted(CAPTURES.glob("nccl-tests-*.txt"))[:4] if CAPTURES.is_dir() else []
    lines = [l for f in files for l in f.read_text(errors="replace").splitlines()]
    return lines or ["#       size         count      type   redop    root     time   algbw   busbw #wrong",
                     "        1024           256     float     sum      -1    22.64    0.05    0.05      0"]


CAPTURE_LINES = _capture_lines()


@fast(100)
@given(picks=st.lists(st.integers(0, len(CAPTURE_LINES) - 1), max_size=30),
       noise=st.lists(st.text(max_size=60), max_size=5), at=st.integers(0, 30))
def test_nccl_tests_text(tmp_path_factory, picks, noise, at):
    lines = [CAPTURE_LINES[i] for i in picks]
    lines[at:at] = noise
    p = tmp_path_factory.mktemp("nt") / "run.txt"
    p.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    outcome("nccl-tests-text", read_run, p)


def make_output_target(base: Path, kind: str, target: Path) -> Path:
    """Put a thing of ``kind`` at ``target`` (below ``base``); returns the path an output is asked to use."""
    if kind == "under-a-file":
        (base / "afile").write_bytes(b"keep")
        return base / "afile" / target.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        target.write_bytes(b"keep")
    elif kind == "folder":
        target.mkdir(exist_ok=True)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "null-device":
        try:
            os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            target.write_bytes(b"keep")
    elif kind == "symlink-to-folder":
        target.symlink_to(base)
    elif kind == "dangling-symlink":
        target.symlink_to(base / "nowhere" / "x")
    return target


KINDS = ["missing", "file", "folder", "fifo", "null-device", "symlink-to-folder", "under-a-file", "dangling-symlink"]


@fast(80)
# no lone surrogates (category Cs): no argv decodes to one outside surrogateescape's range, and os.lstat
# cannot even encode one (newer hypothesis draws them: UnicodeEncodeError in a fresh venv's run)
@given(kind=st.sampled_from(KINDS), name=st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                                                 min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..")),
       depth=st.integers(0, 2))
def test_output_paths(tmp_path_factory, kind, name, depth):
    base = tmp_path_factory.mktemp("out")
    target = make_output_target(base, kind, base.joinpath(*(["sub"] * depth), name))
    try:
        before = os.lstat(target)
    except OSError:
        before = None
    ok = outcome("output-path", check_output_path, target, "--json")
    if ok is not None:
        from rdmacheck.util.atomic import atomic_write

        atomic_write(target, "{}")  # what the check let through must really be writable
        assert Path(target).read_text() == "{}"
    elif before is not None:
        after = os.lstat(target)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert not [p for p in base.rglob("*.probe")]  # the check leaves nothing behind


# ---------------------------------------------------------------------------------------------
# through the CLI: a bounded sample
CLI = settings(deadline=None, max_examples=7, suppress_health_check=list(HealthCheck))


def argv_safe(text: str) -> bool:
    """What a command line can carry: no NUL (execve refuses it), nothing os.fsencode cannot encode (a
    lone surrogate outside surrogateescape's range).  Hypothesis 6.170 draws both; the parsers see them
    in-process above."""
    try:
        return b"\0" not in os.fsencode(text)
    except UnicodeEncodeError:
        return False


@CLI
@given(sizes=SIZES.filter(argv_safe), timeout=st.sampled_from(["nan", "inf", "-1", "0", "5", "1e400", "x"]),
       busbw=st.sampled_from(["nan", "12GB/s", "-1", "1e400", "0", "fast"]), tps=st.sampled_from(["nan", "0.01", "-0"]))
def test_cli_bench_flags(tmp_path_factory, sizes, timeout, busbw, tps):
    """Every generated flag set ends before a rank starts (--max-memory 1 refuses any valid plan): exit 2."""
    tmp = tmp_path_factory.mktemp("cb")
    js = tmp / "b.json"
    js.write_bytes(b"keep")
    judge("cli-bench", ["bench", "--backend", "gloo", "--nproc", "2", "--sizes", sizes, "--timeout", timeout,
                        "--expect-busbw", busbw, "--time-per-size", tps, "--max-memory", "1", "--json", str(js)], {2},
          outputs=[js], bound=20, cwd=tmp)


@CLI
@given(lines=st.lists(ENV_LINE, max_size=5), items=st.dictionaries(st.sampled_from(PROFILE_KEYS), TOML_VALUE, max_size=3))
def test_cli_preflight_env_and_profile(tmp_path_factory, lines, items):
    tmp = tmp_path_factory.mktemp("cp")
    env, prof, js = tmp / "x.env", tmp / "p.toml", tmp / "p.json"
    env.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    prof.write_text("\n".join(f"{k} = {v}" for k, v in items.items()) + "\n")
    js.write_bytes(b"keep")
    judge("cli-preflight", ["preflight", "--env", str(env), "--profile", str(prof), "--json", str(js), "-q"], {0, 1, 2},
          outputs=[js], bound=30, cwd=tmp)


ODD_SYSFS = ["ports/1/state", "ports/1/phys_state", "ports/1/rate", "ports/1/link_layer", "ports/1/gids/1",
             "ports/1/gid_attrs/types/1", "fw_ver", "node_type"]


@CLI
@given(file=st.sampled_from(ODD_SYSFS), how=st.sampled_from(["binary", "huge-number", "folder", "empty", "long",
                                                             "symlink-loop", "unreadable"]),
       content=st.binary(max_size=40))
def test_cli_preflight_odd_sysfs_tree(tmp_path_factory, file, how, content):
    """A --root tree where one sysfs file is replaced by something odd (FIFOs are issue 12a's)."""
    tmp = tmp_path_factory.mktemp("cs")
    tree = roce_tree(tmp / "root")
    dev = next((tree / "sys/devices/virtual/infiniband").iterdir())
    f = dev / file
    if f.exists() or f.is_symlink():
        f.unlink() if not f.is_dir() else shutil.rmtree(f)
    f.parent.mkdir(parents=True, exist_ok=True)
    if how == "binary":
        f.write_bytes(content + b"\xff\xfe\x00")
    elif how == "huge-number":
        f.write_text("9" * 5000 + " Gb/sec\n")
    elif how == "folder":
        f.mkdir()
    elif how == "empty":
        f.write_bytes(b"")
    elif how == "long":
        f.write_bytes(b"4: ACTIVE" + b"x" * (2 << 20))
    elif how == "symlink-loop":
        f.symlink_to(f)
    elif how == "unreadable":
        f.write_bytes(content)
        f.chmod(0)
    js = tmp / "p.json"
    judge("cli-sysfs", ["preflight", "--root", str(tree), "--json", str(js), "-q"], {0, 1}, bound=30, cwd=tmp)
    assert json.loads(js.read_text())["kind"] == "preflight"


@settings(CLI, max_examples=3)  # a report that renders costs seconds: its generated inputs go in-process above
@given(key=st.sampled_from(EV_KEYS), value=JSON, imp=st.sampled_from(NCCL_KEYS), imp_value=JSON)
def test_cli_report_generated_evidence_and_imports(tmp_path_factory, key, value, imp, imp_value):
    tmp = tmp_path_factory.mktemp("cr")
    ev = tmp / "e.json"
    ev.write_text(json.dumps({**json.loads(SOFTROCE_PREFLIGHT.read_text()), key: value}))
    d = json.loads(NCCL_JSON.read_text())
    d[imp] = imp_value
    nj = tmp / "n.json"
    nj.write_text(json.dumps(d))
    html, xml = tmp / "r.html", tmp / "r.xml"
    html.write_bytes(b"keep")
    xml.write_bytes(b"keep")
    judge("cli-report", ["report", str(ev), "--import", str(nj), "-o", str(html), "--junit", str(xml)], {0, 1, 2},
          outputs=[html, xml], bound=30, cwd=tmp)


@CLI
@given(kind=st.sampled_from(KINDS), cmd=st.sampled_from(["preflight", "report", "snapshot"]))
def test_cli_output_paths(tmp_path_factory, kind, cmd):
    tmp = tmp_path_factory.mktemp("co")
    target = make_output_target(tmp, kind, tmp / "out")
    argv = {"preflight": ["preflight", "-q", "--json", str(target)],
            "report": ["report", str(SOFTROCE_PREFLIGHT), "-o", str(target)],
            "snapshot": ["snapshot", "--timeout", "0", "-o", str(target)]}[cmd]
    before = os.lstat(target) if os.path.lexists(target) else None
    cp = judge("cli-output", argv, {0, 1, 2}, outputs=[target], bound=30, cwd=tmp)
    if kind in ("folder", "fifo", "null-device", "symlink-to-folder", "under-a-file"):
        assert cp.returncode == 2
        if before is not None:
            assert os.lstat(target).st_ino == before.st_ino
