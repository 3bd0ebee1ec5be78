"""nccl-tests text tables (``all_reduce_perf`` and friends) -> bench records.

The table has changed over nccl-tests' life, and pasted copies mangle it
further, so the parser reads the column header when there is one and falls
back to the token count when there is not:

* 2017: ``bytes N type op time algbw busbw res ...`` (no root column)
* until 2.13: ``size count type redop time algbw busbw error ...``; ``error``
  is the max delta printed ``%5.0le`` (``0e+00``, ``2e-07``), not a count
* 2.13+: ``size count type redop root time algbw busbw #wrong ...``; ``#wrong``
  is ``N/A`` when the run used ``-c 0`` (no data check)
* 2.17+: values too wide for their column print as ``%.1e`` (``1.2e+05``);
  ``-I`` adds per-iteration columns (``i_min i_max i_p99 i_cv%``) and
  timestamps add a trailing ``YYYY-mm-dd HH:MM:SS``
* ``mpirun --tag-output`` prefixes every line with ``[1,0]<stdout>:``;
  wiki/README copies elide rows with ``...``, drop the footer, drop the
  ``out-of-place / in-place`` banner or the whole ``#`` header.

Each table row yields two records (out-of-place, in-place) with the fields
rdmacheck's own bench writes, so imported runs plot next to rdmacheck runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from rdmacheck.util.errors import UsageError

_MPI_PREFIX = re.compile(r"^\[\d+,\d+\]<std(?:out|err)>:\s?")
_RANK_LINE = re.compile(
    r"Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?(?:Pid\s+\d+\s+)?on\s+(\S+)\s+device\s+(\d+)\s+\[([^\]]*)\]\s*(.*)$"
)
# nccl-tests' writeDeviceReport: "# nccl-tests version %s nccl-headers=%d nccl-library=%d".  The version string
# may carry more words (a build's "2.19.6 (b4d5bee)"), so the codes are searched for, not expected in place.
_VERSION_LINE = re.compile(r"nccl-tests version\s+(\S+)")
_NCCL_CODE = re.compile(r"nccl-(headers|library)=(\d+)")
# NCCL's own init.cc VERSION_STRING, printed with NCCL_DEBUG=VERSION/INFO into the same output:
# "NCCL version 2.28.9+cuda13.0", some builds followed by "(b4d5bee)".
_NCCL_VERSION_LINE = re.compile(r"NCCL version (\d+\.\d+\.\d+)")
_PROGRAM_LINE = re.compile(r"Collective test (?:starting|concluded):\s*(\S+)")
_AVG_BUSBW = re.compile(r"Avg bus bandwidth\s*:\s*(\S+)")
_OOB = re.compile(r"Out of bounds values\s*:\s*(\d+)\s*(\S*)")

# nccl-tests program names (and the spellings people put in file names) -> op.
_OPS = {
    "all_reduce": "all_reduce", "allreduce": "all_reduce",
    "all_gather": "all_gather", "allgather": "all_gather",
    "reduce_scatter": "reduce_scatter", "reducescatter": "reduce_scatter",
    "alltoall": "alltoall", "all_to_all": "alltoall",
    "broadcast": "broadcast", "reduce": "reduce", "sendrecv": "sendrecv",
    "gather": "gather", "scatter": "scatter", "hypercube": "hypercube",
}

# header names seen across versions -> our field
_LEAD_ALIASES = {"size": "bytes", "bytes": "bytes", "count": "count", "n": "count", "type": "dtype",
                 "redop": "redop", "op": "redop", "root": "root"}
_BLOCK_ALIASES = {"time": "time_us", "cputime": "time_us", "algbw": "algbw", "busbw": "busbw",
                  "#wrong": "wrong", "wrong": "wrong", "error": "error", "res": "error"}


def op_from_name(name: str) -> str | None:
    """'all_reduce_perf', './build/all_reduce_perf_mpi', 'nccl-tests-allgather-x.txt' -> op."""
    base = Path(name).name.lower()
    m = re.match(r"([a-z_]+?)_perf", base)
    if m and m.group(1) in _OPS:
        return _OPS[m.group(1)]
    # longest spelling first: 'all_reduce' must win over 'reduce'
    for key in sorted(_OPS, key=len, reverse=True):
        if re.search(rf"(?:^|[^a-z]){key}(?:[^a-z]|$)", base.replace("-", "_").replace(".", "_")) or \
                re.search(rf"(?:^|[-_.]){key}(?:[-_.]|$)", base):
            return _OPS[key]
    return None


def _num(cell: str) -> float | None:
    """A numeric cell; 'N/A', '-', 'nan' and garbage -> None."""
    try:
        v = float(cell)
    except ValueError:
        return None
    return None if math.isnan(v) or math.isinf(v) else v


@dataclasses.dataclass
class _Layout:
    lead: list[str]              # fields before the first time column
    block: list[str]             # fields of one out-of-place/in-place block
    nblocks: int = 2


_DEFAULT_NEW = _Layout(["bytes", "count", "dtype", "redop", "root"], ["time_us", "algbw", "busbw", "wrong"])
_DEFAULT_OLD = _Layout(["bytes", "count", "dtype", "redop"], ["time_us", "algbw", "busbw", "error"])


def _layout_from_header(tokens: list[str]) -> _Layout | None:
    names = [t.lower() for t in tokens]
    if "busbw" not in names or not ({"size", "bytes"} & set(names)):
        return None
    lead: list[str] = []
    i = 0
    while i < len(names) and names[i] not in ("time", "cputime"):
        lead.append(_LEAD_ALIASES.get(names[i], names[i]))
        i += 1
    starts = [j for j in range(i, len(names)) if names[j] in ("time", "cputime")]
    if not starts:
        return None
    end = starts[1] if len(starts) > 1 else len(names)
    block = [_BLOCK_ALIASES.get(n, n) for n in names[starts[0]:end] if n != "timestamp"]
    return _Layout(lead, block, nblocks=max(1, len(starts)))


@dataclasses.dataclass
class ImportedRun:
    source: str
    fmt: str                       # "text" or "json"
    op: str
    records: list[dict[str, Any]]
    rows: int                      # table rows (sizes), each giving 2 records
    hosts: list[str] = dataclasses.field(default_factory=list)
    devices: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    world_size: int | None = None
    nccl_tests_version: str | None = None
    nccl_version: str | None = None
    avg_busbw: float | None = None
    out_of_bounds: int | None = None
    elided: bool = False
    footer: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)   # NCCL_*/CUDA_* only
    time: str | None = None

    @property
    def last_busbw(self) -> float | None:
        oop = [r for r in self.records if not r["in_place"]]
        return oop[-1]["busbw"] if oop else None


def _nccl_code_to_version(code: str | int | None) -> str | None:
    """NCCL_VERSION_CODE 22809 -> '2.28.9' (>= 2.9 encoding: X*10000 + Y*100 + Z).

    A version string (``"2.28.9+cuda13.0 (b4d5bee)"``: suffix and git hash as builds print them) keeps its
    X.Y.Z instead of being lost to int()."""
    if isinstance(code, str) and (m := re.match(r"\s*(\d+\.\d+\.\d+)", code)):
        return m.group(1)
    try:
        c = int(code)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if c <= 0:
        return None
    if c >= 10000:
        return f"{c // 10000}.{(c % 10000) // 100}.{c % 100}"
    return f"{c // 1000}.{(c % 1000) // 100}.{c % 100}"


def parse_text(text: str, source: str = "<text>", op: str | None = None) -> ImportedRun:
    """Parse one nccl-tests text output (one or more tables).  Raises UsageError if no row is found."""
    layout: _Layout | None = None
    cur_op = op
    records: list[dict[str, Any]] = []
    rows = 0
    ranks: dict[int, dict[str, Any]] = {}
    run = ImportedRun(source=source, fmt="text", op=op or "", records=records, rows=0)
    skipped = 0
    for raw in text.splitlines():
        line = _MPI_PREFIX.sub("", raw.rstrip("\r\n"))
        s = line.strip()
        if not s or s.startswith("```"):
            continue
        if s.startswith("..."):
            run.elided = True
            continue
        body = s.lstrip("#").strip()
        m = _RANK_LINE.search(body)
        if m and (s.startswith("#") or body.startswith("Rank")):
            r = int(m.group(1))
            ranks[r] = {"rank": r, "hostname": m.group(2), "device": int(m.group(3)),
                        "device_hex": m.group(4), "device_info": m.group(5).strip()}
            continue
        if s.startswith("#") or not s[0].isdecimal():
            if (mv := _VERSION_LINE.search(body)):
                run.nccl_tests_version = mv.group(1)
                codes = dict(_NCCL_CODE.findall(body))
                # the library that ran wins over the headers it was built against
                run.nccl_version = (_nccl_code_to_version(codes.get("library") or codes.get("headers"))
                                    or run.nccl_version)
            elif (mn := _NCCL_VERSION_LINE.search(body)):
                run.nccl_version = run.nccl_version or mn.group(1)
            elif (mp := _PROGRAM_LINE.search(body)):
                if op is None:
                    cur_op = op_from_name(mp.group(1)) or cur_op
            elif (ma := _AVG_BUSBW.search(body)):
                run.avg_busbw = _num(ma.group(1))
                run.footer = True
            elif (mo := _OOB.search(body)):
                run.out_of_bounds = int(mo.group(1))
            elif s.startswith("#") and (lay := _layout_from_header(body.split())):
                layout = lay
            continue
        tokens = s.split()
        if not tokens[0].isdecimal() or len(tokens) < 5 or int(tokens[0]) >= 1 << 62:
            # (a size beyond 2**62 bytes is no measurement: a 400-digit row crashed the report's float())
            skipped += 1
            continue
        lay = layout
        if lay is None:
            # No header: 2.13+ rows have an integer root in column 5.
            lay = _DEFAULT_NEW if re.fullmatch(r"-?\d+", tokens[4]) and len(tokens) >= 13 else _DEFAULT_OLD
        lead = dict(zip(lay.lead, tokens[: len(lay.lead)]))
        rest = tokens[len(lay.lead):]
        if "dtype" in lead and not re.match(r"[A-Za-z]", lead["dtype"]):
            skipped += 1
            continue
        bw = len(lay.block)
        blocks = [rest[k * bw:(k + 1) * bw] for k in range(lay.nblocks)]
        if not blocks or len(blocks[0]) < 3:
            skipped += 1
            continue
        rows += 1
        nbytes = int(lead["bytes"])
        for k, cells in enumerate(blocks):
            if len(cells) < 3:
                continue
            vals = dict(zip(lay.block, cells))
            rec: dict[str, Any] = {
                "op": cur_op or "unknown",
                "bytes": nbytes,
                "count": int(lead["count"]) if lead.get("count", "").isdecimal() else None,
                "dtype": lead.get("dtype"),
                "redop": lead.get("redop"),
                "root": int(lead["root"]) if re.fullmatch(r"-?\d+", lead.get("root", "x")) else None,
                "time_us": _num(vals.get("time_us", "")),
                "algbw": _num(vals.get("algbw", "")),
                "busbw": _num(vals.get("busbw", "")),
                "wrong": None,
                "in_place": k == 1,
                "world_size": None,
                "backend": "nccl",
                "source": "nccl-tests",
            }
            if "wrong" in vals:
                w = _num(vals["wrong"])
                rec["wrong"] = int(w) if w is not None else None
            if "error" in vals:
                rec["error"] = _num(vals["error"])  # old max-delta column
            records.append(rec)
    if not records:
        raise UsageError(f"{source}: no nccl-tests result rows found; pass the output of an nccl-tests *_perf binary")
    if skipped:
        run.notes.append(f"{skipped} line(s) that looked like rows could not be read")
    if run.elided:
        run.notes.append("rows elided with '...' in the source")
    if not run.footer:
        run.notes.append("no '# Avg bus bandwidth' footer (truncated output?)")
    run.rows = rows
    # The program name may come after the table ("Collective test concluded") or only in the file name.
    run.op = cur_op or op_from_name(source) or "unknown"
    for rec in records:
        if rec["op"] == "unknown":
            rec["op"] = run.op
    if ranks:
        run.devices = [ranks[k] for k in sorted(ranks)]
        run.world_size = max(ranks) + 1
        run.hosts = sorted({d["hostname"] for d in run.devices})
        for rec in records:
            rec["world_size"] = run.world_size
    return run
