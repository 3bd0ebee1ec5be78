"""nccl-tests importers: every real table in ../shared/captures/text, old and new formats, -J JSON.

Expected numbers per capture were read from the files by hand (rows counted,
the last row's out-of-place and in-place busbw copied), not produced by the parser.
"""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_cli
from rdmacheck.util.errors import UsageError
from rdmacheck.importers import import_file, op_from_name, parse_text, read_run

DATA = REPO / "tests" / "data" / "nccl-tests"

# file -> (op, table rows, last out-of-place busbw, last in-place busbw, world size or None, footer avg busbw)
EXPECTED = {
    "nccl-tests-allgather-gke-a3-highgpu-tcpx-NA-wrong.txt": ("all_gather", 10, 70.90, 71.35, None, 30.9622),
    "nccl-tests-allgather-gke-a3-megagpu-2node.txt": ("all_gather", 31, 188.73, 188.90, None, 53.8932),
    "nccl-tests-allgather-gke-dws-flex-start.txt": ("all_gather", 24, 328.85, 335.67, None, 120.248),
    "nccl-tests-allreduce-aws-batch-full-mpi-prefixed.txt": ("all_reduce", 32, 483.05, 483.35, None, 156.742),
    "nccl-tests-allreduce-aws-p5-2node-mpi-prefixed-elided.txt": ("all_reduce", 7, 437.79, 437.89, None, 52.9753),
    "nccl-tests-allreduce-aws-p5en-elided.txt": ("all_reduce", 3, 369.86, 369.42, None, 84.0569),
    "nccl-tests-allreduce-coreweave-gb200-20rack.txt": ("all_reduce", 6, 405.74, 404.77, 1440, 297.808),
    "nccl-tests-allreduce-coreweave-gb200-2rack.txt": ("all_reduce", 6, 810.41, 820.36, 144, 688.487),
    "nccl-tests-allreduce-coreweave-gb200-nvl72-1rack.txt": ("all_reduce", 5, 834.57, 846.82, 72, 745.53),
    "nccl-tests-allreduce-coreweave-h100-64gpu-sharp.txt": ("all_reduce", 5, 386.56, 385.56, None, 373.187),
    "nccl-tests-allreduce-gcp-a3mega-2x8xH100.txt": ("all_reduce", 31, 338.82, 337.35, 16, 70.742),
    "nccl-tests-allreduce-h100x2-nvlink-reference.txt": ("all_reduce", 21, 329.15, 330.04, 2, 113.759),
}


def test_every_capture_is_listed(captures):
    # a capture added later must get its hand-read numbers here, not pass silently
    found = sorted(p.name for p in (captures / "text").glob("nccl-tests-*.txt"))
    assert found == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_parses(captures, name):
    op, rows, last_oop, last_ip, world, avg = EXPECTED[name]
    run = read_run(captures / "text" / name)
    assert run.op == op
    assert run.rows == rows
    assert len(run.records) == 2 * rows
    oop = [r for r in run.records if not r["in_place"]]
    ip = [r for r in run.records if r["in_place"]]
    assert oop[-1]["busbw"] == pytest.approx(last_oop)
    assert ip[-1]["busbw"] == pytest.approx(last_ip)
    assert run.world_size == world
    assert run.avg_busbw == pytest.approx(avg)
    sizes = [r["bytes"] for r in oop]
    assert sizes == sorted(sizes)
    for r in run.records:  # same fields as rdmacheck bench records
        assert {"op", "bytes", "count", "dtype", "redop", "root", "time_us", "algbw", "busbw", "wrong",
                "in_place", "world_size", "backend"} <= set(r)


def test_na_wrong_column_is_none(captures):
    run = read_run(captures / "text" / "nccl-tests-allgather-gke-a3-highgpu-tcpx-NA-wrong.txt")
    assert all(r["wrong"] is None for r in run.records)
    assert run.records[0]["bytes"] == 1048576 and run.records[0]["time_us"] == pytest.approx(996.7)


def test_zero_size_rows_kept(captures):
    run = read_run(captures / "text" / "nccl-tests-allgather-gke-a3-megagpu-2node.txt")
    assert sum(1 for r in run.records if r["bytes"] == 0 and not r["in_place"]) == 5


def test_mpirun_prefix_and_elision(captures):
    run = read_run(captures / "text" / "nccl-tests-allreduce-aws-p5-2node-mpi-prefixed-elided.txt")
    assert run.elided and any("elided" in n for n in run.notes)
    assert [r["bytes"] for r in run.records if not r["in_place"]][:2] == [0, 67108864]


def test_rank_lines_give_hosts(captures):
    run = read_run(captures / "text" / "nccl-tests-allreduce-gcp-a3mega-2x8xH100.txt")
    assert run.hosts == ["ztan-mig-235z", "ztan-mig-gq73"]
    assert len(run.devices) == 16 and run.devices[15]["device_info"] == "NVIDIA H100 80GB HBM3"


# nccl-tests before 2.13 (header of src/all_reduce.cu at 51af557^): no root column, an `error`
# column printed %5.0le, cells printed by the old %7.0f/%7.1f/%7.2f time formatter.
OLD_FORMAT = """\
# nThread 1 nGpus 8 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 5 iters: 20 validation: 1
#
# Using devices
#   Rank  0 Pid  12345 on     node01 device  0 [0x1a] Tesla V100-SXM2-32GB
#   Rank  7 Pid  12345 on     node01 device  7 [0xb2] Tesla V100-SXM2-32GB
#
#                                                     out-of-place                       in-place
#       size         count    type   redop     time   algbw   busbw  error     time   algbw   busbw  error
#        (B)    (elements)                     (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
           8             2   float     sum    42.30    0.00    0.00  0e+00    41.32    0.00    0.00  0e+00
    33554432       8388608   float     sum    412.6   81.32  142.31  2e-07    410.9   81.66  142.91  2e-07
   134217728      33554432   float     sum    15322    8.76   15.33  1e+00    15301    8.77   15.35  1e+00
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 52.4563
"""


def test_old_error_column_and_no_root():
    run = parse_text(OLD_FORMAT, source="old.txt", op="all_reduce")
    assert run.rows == 3
    last = [r for r in run.records if not r["in_place"]][-1]
    assert last["bytes"] == 134217728 and last["time_us"] == 15322 and last["busbw"] == pytest.approx(15.33)
    assert last["root"] is None and last["wrong"] is None and last["error"] == 1.0
    assert run.world_size == 8 and run.hosts == ["node01"]


# 2.17+: %.1e cells when a value is too wide for its column (getFloatStr in src/util.cu),
# -I per-iteration columns, a trailing timestamp, and no footer (job killed).
NEW_WIDE = """\
# nccl-tests version 2.19.6 nccl-headers=22809 nccl-library=22809
# Collective test starting: reduce_scatter_perf
#
#                                             out-of-place (+ per-iteration)                                in-place (+ per-iteration)
#       size         count      type   redop    root     time   algbw   busbw  #wrong    i_min    i_max    i_p99    i_cv%     time   algbw   busbw  #wrong    i_min    i_max    i_p99    i_cv%
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)     (us)     (us)      (%)     (us)  (GB/s)  (GB/s)             (us)     (us)     (us)      (%)
        1024            32     float     sum      -1    12.34    0.08    0.07       0    11.90    13.10    13.05     2.10    12.20    0.08    0.07       0    11.80    12.90    12.88     1.90
 17179869184     536870912     float     sum      -1  1.2e+05  1.4e+02  1.3e+02       0  1.1e+05  1.3e+05  1.3e+05     0.50  1.2e+05  1.4e+02  1.3e+02     N/A  1.1e+05  1.3e+05  1.3e+05     0.40
"""


def test_wide_cells_per_iter_columns_missing_footer():
    run = parse_text(NEW_WIDE, source="x.txt")
    assert run.op == "reduce_scatter" and run.nccl_tests_version == "2.19.6" and run.nccl_version == "2.28.9"
    assert run.rows == 2 and not run.footer and any("footer" in n for n in run.notes)
    oop = [r for r in run.records if not r["in_place"]]
    ip = [r for r in run.records if r["in_place"]]
    assert oop[1]["time_us"] == 1.2e5 and oop[1]["busbw"] == 130.0 and oop[1]["wrong"] == 0
    assert ip[1]["busbw"] == 130.0 and ip[1]["wrong"] is None  # N/A
    assert ip[0]["time_us"] == pytest.approx(12.20)            # not an i_* column


def test_timestamp_column():
    text = (
        "#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong           timestamp\n"
        "        8192          2048     float     sum      -1    16.11    0.51    0.51       0    15.84    0.52    0.52       0 2026-11-27 10:00:01\n"
    )
    run = parse_text(text, source="all_reduce_perf.log")
    assert run.op == "all_reduce" and run.records[1]["busbw"] == pytest.approx(0.52)


def test_json_fixture():
    run = read_run(DATA / "all_reduce_perf-J.json")
    assert run.fmt == "json" and run.op == "all_reduce" and run.rows == 6
    assert run.world_size == 2 and run.hosts == ["vm"] and run.nccl_version == "2.28.9"
    last = [r for r in run.records if not r["in_place"]][-1]
    assert last["bytes"] == 1073741824 and last["busbw"] == pytest.approx(329.15) and last["root"] == -1
    assert last["wrong"] == 0 and run.avg_busbw == pytest.approx(113.759)
    assert run.env == {"NCCL_DEBUG": "WARN", "NCCL_IB_HCA": "mlx5_0"}  # the fake secret is dropped


def test_json_and_text_agree(captures):
    """The same run as text and as -J JSON yields the same records for the shared sizes."""
    text = read_run(captures / "text" / "nccl-tests-allreduce-h100x2-nvlink-reference.txt")
    js = read_run(DATA / "all_reduce_perf-J.json")
    t = {(r["bytes"], r["in_place"]): r for r in text.records}
    for r in js.records:
        other = t[(r["bytes"], r["in_place"])]
        for k in ("count", "dtype", "redop", "root", "time_us", "algbw", "busbw", "wrong", "op"):
            assert r[k] == other[k], k


def test_json_nan_and_null(tmp_path):
    d = json.loads((DATA / "all_reduce_perf-J.json").read_text())
    d["results"][0]["out_of_place"] = None                  # trace replay: in-place only
    d["results"][1]["in_place"]["bus_bw"] = "nan"           # how util.cu writes NaN
    d["results"][1]["in_place"]["nwrong"] = None            # -c 0
    p = tmp_path / "x.json"
    p.write_text(json.dumps(d))
    run = read_run(p)
    assert len(run.records) == 11
    r = [x for x in run.records if x["bytes"] == 2048 and x["in_place"]][0]
    assert r["busbw"] is None and r["wrong"] is None


def test_truncated_json_is_usage_error(tmp_path):
    p = tmp_path / "killed.json"
    p.write_text((DATA / "all_reduce_perf-J.json").read_text()[:500])
    with pytest.raises(UsageError, match="unterminated"):
        read_run(p)


def test_not_a_table(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n# just a comment\n")
    with pytest.raises(UsageError, match="no nccl-tests result rows"):
        read_run(p)


def test_evidence_shape(captures):
    ev = import_file(captures / "text" / "nccl-tests-allreduce-gcp-a3mega-2x8xH100.txt")
    assert ev.kind == "bench" and ev.context["source"] == "nccl-tests"
    assert ev.host == "ztan-mig-235z,ztan-mig-gq73" and len(ev.records) == 62


def test_op_from_name():
    assert op_from_name("./build/all_reduce_perf") == "all_reduce"
    assert op_from_name("nccl-tests-allgather-gke.txt") == "all_gather"
    assert op_from_name("reduce_perf_mpi") == "reduce"
    assert op_from_name("random.txt") is None


def test_cli_bad_import_exits_2(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("nothing here\n")
    r = run_cli("report", "--import", str(p), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 2 and "no nccl-tests result rows" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("report", "--import", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 2 and "not found" in r.stderr


# A build whose version string carries a git hash (NCCL's VERSION_STRING "2.28.9+cuda13.0" plus the hash
# some builds append; nccl-tests' NCCL_TESTS_VERSION with one): the NCCL version survives both spellings.
HASHED = """\
# nccl-tests version 2.19.6 (b4d5bee) nccl-headers=22809 nccl-library=22809
# Collective test starting: all_reduce_perf
#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong
        8192          2048     float     sum      -1    16.11    0.51    0.51       0    15.84    0.52    0.52       0
"""


def test_version_with_git_hash_kept():
    run = parse_text(HASHED, source="x.txt")
    assert run.nccl_tests_version == "2.19.6" and run.nccl_version == "2.28.9"
    # no nccl-headers/library codes: NCCL's own "NCCL version" line (NCCL_DEBUG=INFO) supplies it
    text = HASHED.replace(" nccl-headers=22809 nccl-library=22809", "").replace(
        "# Collective", "node-0:747:747 [0] NCCL INFO NCCL version 2.28.9+cuda13.0 (b4d5bee)\n# Collective")
    run = parse_text(text, source="x.txt")
    assert run.nccl_version == "2.28.9" and run.rows == 1


def test_json_version_string_with_git_hash(tmp_path):
    import json

    data = json.loads((DATA / "all_reduce_perf-J.json").read_text())
    data["nccl_version"] = "2.28.9+cuda13.0 (b4d5bee)"
    f = tmp_path / "all_reduce_perf.json"
    f.write_text(json.dumps(data))
    assert read_run(f).nccl_version == "2.28.9"
