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
import re
from typing import Any

from rdmacheck.util.errors import UsageError
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


def _int(v: Any) -> int | None:
    """A whole number from JSON (int, or an integral finite float); anything else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if abs(v) < 1 << 62 else None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 2 ** 62:
        return int(v)
    return None


def looks_like_json(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and isinstance(data.get("results"), list) and "version" in data and "config" in data


def parse_json(data: dict[str, Any], source: str = "<json>", op: str | None = None) -> ImportedRun:
    if not looks_like_json(data):
        raise UsageError(f"{source}: not an nccl-tests -J JSON file (no version/config/results keys)")
    args = data.get("args") or []
    if not isinstance(args, list):
        args = []
    if op is None:
        op = (op_from_name(str(args[0])) if args else None) or op_from_name(source) or "unknown"
    cfg = data.get("config") or {}
    if not isinstance(cfg, dict):
        raise UsageError(f"{source}: 'config' is {type(cfg).__name__}, not an object; is this an nccl-tests -J file?")
    devs = cfg.get("devices") or []
    devices = [d for d in (devs if isinstance(devs, list) else []) if isinstance(d, dict)]
    ranks = [_int(d.get("rank", 0)) for d in devices]
    world = (max(r for r in ranks if r is not None) + 1) if any(r is not None for r in ranks) else None
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
            size = _int(row["size"])
            if size is None or size < 0:
                raise UsageError(f"{source}: results[{i}].size is {str(row['size'])[:40]!r}, not a byte count; "
                                 "is this an nccl-tests -J file?")
            records.append({
                "op": op,
                "bytes": size,
                "count": _int(row.get("count")),
                "dtype": row.get("type"),
                "redop": row.get("redop"),
                "root": int(root_s) if re.fullmatch(r"-?[0-9]{1,9}", root_s) else None,
                "time_us": _f(blk.get("time", blk.get("cpu_time"))),
                "algbw": _f(blk.get("alg_bw")),
                "busbw": _f(blk.get("bus_bw")),
                "wrong": _int(nwrong) if nwrong is not None else None,
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
        out_of_bounds=_int(oob.get("count")) if isinstance(oob, dict) else None,
        footer="average_bus_bandwidth" in data,
    )
    # The JSON holds the whole process environment; keep only what explains the
    # run, so tokens and passwords in someone's shell never reach a report.
    env = data.get("env")
    for e in env if isinstance(env, list) else []:
        if isinstance(e, str) and "=" in e:
            k, v = e.split("=", 1)
            if k.startswith(_KEEP_ENV):
                run.env[k] = v
    run.time = str(data["start_time"]) if data.get("start_time") else None
    errs = data.get("errors")
    if errs:
        run.notes.append("errors: " + "; ".join(str(e)[:500] for e in (errs if isinstance(errs, list) else [errs])))
    return run
