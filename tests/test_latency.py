"""bench.latency and --algo: parsing, the pure gate, and real 2-rank gloo runs (torch CPU, loopback).

The gloo runs are real rank processes through the real CLI; the ceilings the CLI runs use are chosen
far from any time loopback gloo can take (a nanosecond, ten seconds), and the exact boundary is then
checked on the run's own measured times through the pure gate.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from rdmacheck.bench.algo import apply_algo, resolve_algo
from rdmacheck.bench.latency import applicable_limits, latency_gate, parse_latency_table, parse_time_us
from rdmacheck.config.profile import REFERENCE_LATENCY, build_profile
from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Status

from test_bench import GLOO, torch_ranks  # noqa: F401  (fixture)


@pytest.mark.parametrize("text,us", [("100us", 100.0), ("0.35ms", 350.0), ("250", 250.0), ("1500ns", 1.5), ("1e-4s", 100.0)])
def test_time_units(text, us):
    assert parse_time_us(text, "t") == pytest.approx(us)


@pytest.mark.parametrize("bad", ["8K=nan", "8K=NaN", "8K=-5us", "8K=0", "8K=inf", "8K=fast", "8K", "=5us",
                                 "bogus:8K=5us", "8K=5us,8K=6us", "", "8Q=5us"])
def test_bad_tables_refused(bad):
    with pytest.raises(UsageError):
        parse_latency_table(bad)


@pytest.mark.parametrize("bad", ["8K=nan", "8K=-1us", "8K=zzz"])
def test_bad_values_exit_2_one_line(bad):
    p = run_cli("bench", "--backend", "gloo", "--expect-latency", bad, timeout=30)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("rdmacheck: error: --expect-latency") and len(p.stderr.strip().splitlines()) == 1


def test_profile_table_and_bad_profile_value(tmp_path):
    prof = build_profile({"latency": {"all_reduce:8K": "90us", "1M": "0.5ms"}})
    assert prof.latency == [(None, 1 << 20, 500.0), ("all_reduce", 8192, 90.0)]
    assert build_profile().latency == REFERENCE_LATENCY
    with pytest.raises(UsageError):
        build_profile({"latency": {"8K": float("nan")}})
    bad = tmp_path / "p.toml"
    bad.write_text('[latency]\n"8K" = "-3us"\n')
    p = run_cli("bench", "--backend", "gloo", "--profile", str(bad), timeout=30)
    assert p.returncode == 2 and "positive" in p.stderr


def test_gate_per_op_ceiling_worst_variant_and_skip():
    recs = [{"op": "all_gather", "bytes": 8192, "time_us": 40.0, "in_place": False},
            {"op": "all_gather", "bytes": 8192, "time_us": 60.0, "in_place": True},
            {"op": "all_reduce", "bytes": 8192, "time_us": 70.0, "in_place": True}]
    limits = parse_latency_table("8K=65us,all_reduce:8K=80us")
    r = latency_gate(recs, limits, "t")
    assert r.status is Status.PASS                    # all_reduce has its own 80 us, all_gather's worst is 60
    r = latency_gate(recs, parse_latency_table("8K=50us"), "t")
    assert r.status is Status.FAIL and "all_gather 8K 60.0 us" in r.observed.replace(" KiB", "K")
    assert latency_gate(recs, parse_latency_table("1M=1ms"), "t").status is Status.SKIP
    assert latency_gate(recs, [], "t").status is Status.SKIP
    # the reference table judges NCCL runs only; gloo needs explicit ceilings
    assert applicable_limits(None, REFERENCE_LATENCY, "gloo")[0] == []
    assert applicable_limits(None, REFERENCE_LATENCY, "nccl")[0] == REFERENCE_LATENCY


def test_algo_resolution():
    env: dict[str, str] = {}
    assert resolve_algo(None, 2, 1, env)["algo"] == "ring"          # two nodes, one rank each
    assert resolve_algo(None, 2, 2, env)["algo"] == "auto"          # one node
    rec = apply_algo(resolve_algo(None, 4, 2, env), "nccl", env)
    assert env["NCCL_ALGO"] == "Ring" and rec["applies"] is True
    apply_algo(resolve_algo("auto", 4, 2, env), "nccl", env)
    assert "NCCL_ALGO" not in env                                   # auto: NCCL chooses
    env["NCCL_ALGO"] = "Tree"
    got = apply_algo(resolve_algo(None, 4, 2, env), "nccl", env)
    assert got["source"] == "environment" and env["NCCL_ALGO"] == "Tree"
    apply_algo(resolve_algo("ring", 4, 2, env), "nccl", env)
    assert env["NCCL_ALGO"] == "Ring"                               # an explicit --algo wins


def test_gloo_latency_gate_fails_below_and_passes_above(tmp_path, torch_ranks):  # noqa: F811
    sizes = "8K,16K"
    slow = tmp_path / "fail.json"
    p = run_cli("bench", "--nproc", "2", "--sizes", sizes, *GLOO, "--expect-latency", "8K=1ns,16K=1ns",
                "--json", str(slow), timeout=150)
    ev = json.loads(slow.read_text())
    res = {r["id"]: r for r in ev["results"]}
    assert p.returncode == 1, p.stdout + p.stderr
    assert res["bench.latency"]["status"] == "fail" and res["bench.run"]["status"] == "pass"
    assert "[FAIL] bench.latency" in p.stdout
    # the ceilings are named in the gate, and the default algo on one node is auto, recorded as not used by gloo
    assert res["bench.latency"]["details"]["source"] == "--expect-latency"
    assert ev["context"]["algo"]["algo"] == "auto" and ev["context"]["algo"]["applies"] is False
    measured = {(r["op"], r["bytes"]): r["time_us"] for r in ev["records"]}
    assert set(measured) == {("all_reduce", 8192), ("all_reduce", 16384)}
    # the boundary, on this run's own times: just below the measured time fails, just above passes
    for factor, status in ((0.99, Status.FAIL), (1.01, Status.PASS)):
        limits = [(None, b, t * factor) for (_, b), t in measured.items()]
        assert latency_gate(ev["records"], limits, "x").status is status

    ok = tmp_path / "pass.json"
    p = run_cli("bench", "--nproc", "2", "--sizes", sizes, *GLOO, "--expect-latency", "8K=10s,16K=10s",
                "--algo", "ring", "--json", str(ok), timeout=150)
    ev = json.loads(ok.read_text())
    res = {r["id"]: r for r in ev["results"]}
    assert p.returncode == 0, p.stdout + p.stderr
    assert res["bench.latency"]["status"] == "pass"
    assert {(x["op"], x["bytes"]) for x in res["bench.latency"]["details"]["rows"]} == set(measured)
    assert ev["context"]["algo"]["algo"] == "ring" and ev["context"]["algo"]["source"] == "--algo"
    assert "algo ring" in p.stdout.splitlines()[0]                  # the table header names it

    # the report plots latency beside bandwidth, with the ceilings drawn and the gate named
    import base64
    import re

    html = tmp_path / "r.html"
    r = run_cli("report", str(ok), "-o", str(html), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    page = html.read_text()
    assert 'class="muted latency-gate"' in page
    assert '<span class="small algo">algo ring (NCCL only)</span>' in page   # the run names its algorithm
    uri = re.search(r'id="plot-all_reduce"><img[^>]+src="data:image/svg\+xml;base64,([^"]+)"', page).group(1)
    svg = base64.b64decode(uri).decode()
    assert "bench.latency ceiling" in svg and "all_reduce: latency" in svg


def test_one_rank_is_never_a_latency_pass(tmp_path):
    """One rank's collective is a local call (seen on one H200: all_reduce 1K..1G in ~25 us each, busbw 0):
    the gate skips instead of passing, and an explicit --expect-latency is refused before any rank starts."""
    recs = [{"op": "all_reduce", "bytes": 8192, "time_us": 30.9, "in_place": True}]
    r = latency_gate(recs, parse_latency_table("8K=95us"), "t", world_size=1)
    assert r.status is Status.SKIP and "1 rank" in r.observed
    assert latency_gate(recs, parse_latency_table("8K=95us"), "t", world_size=2).status is Status.PASS
    out = tmp_path / "b.json"
    p = run_cli("bench", *GLOO, "--nproc", "1", "--sizes", "8K", "--expect-latency", "8K=1s", "--json", str(out))
    assert p.returncode == 2 and "1 rank" in p.stderr and "--expect-latency" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_refusal_only_another_rank_met_is_said(tmp_path, capsys):
    """The --nproc launcher's relay of a rank's own refusal (rank 0 speaks for refusals every rank shares;
    e.g. `--nproc 2` on a one-GPU node is refused by rank 1 alone). The real function on real files;
    the GPU case itself needs a GPU machine."""
    from rdmacheck.bench.launch import _say_usage_of_others

    (tmp_path / "usage-1.txt").write_text("LOCAL_RANK 1 but only 1 GPU(s) visible; start at most 1 ranks per node")
    _say_usage_of_others(tmp_path, [None, 2])
    assert capsys.readouterr().err.strip() == ("rdmacheck: error: rank 1: LOCAL_RANK 1 but only 1 GPU(s) visible; "
                                               "start at most 1 ranks per node")
    _say_usage_of_others(tmp_path, [2, 2])  # rank 0 said it already
    assert capsys.readouterr().err == ""
