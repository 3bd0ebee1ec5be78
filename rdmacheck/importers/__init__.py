"""Importers: other tools' output -> rdmacheck bench evidence.

``import_file(path)`` reads an nccl-tests text table or ``-J`` JSON file and
returns an ``Evidence(kind="bench")`` whose records carry the same fields as
``rdmacheck bench`` writes, so both plot on the same axes in the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Evidence
from rdmacheck.evidence.schema import validate
from .nccl_tests_json import looks_like_json, parse_json
from .nccl_tests_text import ImportedRun, op_from_name, parse_text

__all__ = ["ImportedRun", "import_file", "parse_json", "parse_text", "read_run", "run_to_evidence", "op_from_name"]


def read_run(path: str | Path, op: str | None = None) -> ImportedRun:
    from rdmacheck.util.inputs import IMPORT_MAX, read_input_text

    p = Path(path)
    text = read_input_text(p, "--import", IMPORT_MAX, errors="replace")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except RecursionError:
            raise UsageError(f"--import {p}: JSON nested too deeply to be nccl-tests -J output") from None
        except ValueError as e:
            raise UsageError(f"--import {p}: looks like JSON but does not parse ({e}); "
                             "an nccl-tests run killed mid-way leaves its -J file unterminated") from None
        if not looks_like_json(data):
            raise UsageError(f"--import {p}: JSON, but not nccl-tests -J output "
                             "(rdmacheck evidence goes in the EVIDENCE arguments, not --import)")
        return parse_json(data, source=str(p), op=op)
    return parse_text(text, source=str(p), op=op)


def run_to_evidence(run: ImportedRun) -> Evidence:
    host = ",".join(run.hosts[:4]) + (f" +{len(run.hosts) - 4}" if len(run.hosts) > 4 else "") if run.hosts else Path(run.source).name
    ctx = {
        "source": "nccl-tests",
        "format": run.fmt,
        "file": run.source,
        "op": run.op,
        "world_size": run.world_size,
        "backend": "nccl",
        "hosts": run.hosts,
        "ranks": run.devices,
        "nccl_version": run.nccl_version,
        "nccl_tests_version": run.nccl_tests_version,
        "avg_busbw": run.avg_busbw,
        "out_of_bounds": run.out_of_bounds,
        "rows": run.rows,
        "notes": run.notes,
        "env": run.env,
    }
    ev = Evidence(kind="bench", host=host, context=ctx, records=run.records)
    if run.time:
        ev.time = run.time
    else:
        ev.time = ""
    # the same checks a file written by rdmacheck passes: readers then take typed records from either
    validate(ev, f"--import {run.source}")
    return ev


def import_file(path: str | Path, op: str | None = None) -> Evidence:
    return run_to_evidence(read_run(path, op=op))
