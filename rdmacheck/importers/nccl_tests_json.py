"""nccl-tests ``-J FILE.json`` output -> bench records.

Format (nccl-tests src/util.cu, JSON_FILE_VERSION 1 since 2.17.x, 2 since
the per-iteration timing change; both read here):

    {"version": 2, "start_time": "YYYY-mm-dd HH:MM:SS",
     "args": ["./build/all_reduce_perf", "-b", "8", ...],   # argv: the op is argv[0]
     "env": ["NCCL_IB_HCA=mlx5", ...],
     "nccl_version": 22809,
     "config": {"nthreads": 1, "ngpus": 1, "minimum_bytes": 8, ..., "validation": 1,
                "blocking_collectives": "false", ...,            # bools are *strings*
                "devices": [{"rank", "group", "pid", "hostname", "device", "device_hex", "device_info"}]},
     "results": [{"size", "count", "type", "redop", "root": "    -1",   # root is a padded *string*
                  "out_of_place": {"time"|"cpu_time", "alg_bw", "bus_bw", "nwrong": float|null} | null,
                  "in_place": {...}, "out_of_place_per_iter": {...}?, "actual_iterations", "experiment_name"}],
     "out_of_bounds": {"count", "okay"}, "average_bus_bandwidth": {"bandwidth", "okay"},
     "errors": [...], "end_time": "..."}

NaN doubles are written as the string "nan".  A run killed mid-way leaves
the file unterminated; that is reported as bad input, not guessed at.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import UsageError
from .nccl_tests_text import ImportedRun, _nccl_code_to_version, op_from_name


_KEEP_ENV = ("NCCL_", "CUDA_VISIBLE", "UCX_", "OMPI_MCA_btl", "FI_")


def _f(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def looks_like_json(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and isinstance(data.get("results"), list) and "version" in data and "config" in data


def parse_json(data: dict[str, Any], source: str = "<json>", op: str | None = None) -> ImportedRun:
    if not looks_like_json(data):
        raise UsageError(f"{source}: not an nccl-tests -J JSON file (no version/config/results keys)")
    args = data.get("args") or []
    if op is None:
        op = (op_from_name(str(args[0])) if args else None) or op_from_name(source) or "unknown"
    cfg = data.get("config") or {}
    devices = [d for d in (cfg.get("devices") or []) if isinstance(d, dict)]
    world = (max(int(d.get("rank", 0)) for d in devices) + 1) if devices else None
    records: list[dict[str, Any]] = []
    rows = 0
    for i, row in enumerate(data["results"]):
        if not isinstance(row, dict) or "size" not in row:
            raise UsageError(f"{source}: results[{i}] has no 'size'; is this an nccl-tests -J file?")
        rows += 1
        root_s = str(row.get("root", "")).strip()
        for in_place, key in ((False, "out_of_place"), (True, "in_place")):
            blk = row.get(key)
            if not isinstance(blk, dict):
                continue  # null: trace-replay runs only do in-place
            nwrong = _f(blk.get("nwrong"))
            records.append({
                "op": op,
                "bytes": int(row["size"]),
                "count": int(row["count"]) if row.get("count") is not None else None,
                "dtype": row.get("type"),
                "redop": row.get("redop"),
                "root": int(root_s) if root_s.lstrip("-").isdigit() else None,
                "time_us": _f(blk.get("time", blk.get("cpu_time"))),
                "algbw": _f(blk.get("alg_bw")),
                "busbw": _f(blk.get("bus_bw")),
                "wrong": int(nwrong) if nwrong is not None else None,
                "in_place": in_place,
                "world_size": world,
                "backend": "nccl",
                "source": "nccl-tests",
            })
    if not records:
        raise UsageError(f"{source}: the nccl-tests JSON holds no results")
    avg = data.get("average_bus_bandwidth") or {}
    oob = data.get("out_of_bounds") or {}
    run = ImportedRun(
        source=source, fmt="json", op=op, records=records, rows=rows,
        hosts=sorted({str(d.get("hostname", "")) for d in devices if d.get("hostname")}),
        devices=devices, world_size=world, nccl_version=_nccl_code_to_version(data.get("nccl_version")),
        avg_busbw=_f(avg.get("bandwidth")) if isinstance(avg, dict) else None,
        out_of_bounds=int(oob["count"]) if isinstance(oob, dict) and oob.get("count") is not None else None,
        footer="average_bus_bandwidth" in data,
    )
    # The JSON holds the whole process environment; keep only what explains the
    # run, so tokens and passwords in someone's shell never reach a report.
    for e in data.get("env") or []:
        if isinstance(e, str) and "=" in e:
            k, v = e.split("=", 1)
            if k.startswith(_KEEP_ENV):
                run.env[k] = v
    run.time = str(data["start_time"]) if data.get("start_time") else None
    if data.get("errors"):
        run.notes.append("errors: " + "; ".join(str(e) for e in data["errors"]))
    return run
