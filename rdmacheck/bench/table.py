"""Output in nccl-tests' own layout, so ``diff`` against all_reduce_perf works.

Column widths and number formatting copy nccl-tests' ``util.cu``
(``getFloatStr``: 2 decimals, fewer when the number is wide).  A variant torch
cannot express (out-of-place all_reduce/broadcast, in-place alltoall/sendrecv)
is printed as blanks, as nccl-tests does for variants it does not run.
"""

from __future__ import annotations

from typing import Any, Iterable

from rdmacheck.util.atomic import atomic_write

CSV_COLUMNS = ["op", "bytes", "count", "dtype", "redop", "root", "in_place", "time_us", "algbw", "busbw",
               "wrong", "iters", "graph", "world_size", "backend"]


def _fs(value: float, width: int) -> str:
    for fmt in (f"%{width}.2f", f"%{width}.1f", f"%{width}.0f"):
        s = fmt % value
        if len(s) <= width:
            return s
    return (f"%{width}.1e" if width >= 7 else f"%{width}.0e") % value


def header(time_label: str = "time") -> list[str]:
    e = ("", "", "", "", "")
    return [
        "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          " % e,
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s " % (
            "size", "count", "type", "redop", "root", time_label, "algbw", "busbw", "#wrong", time_label, "algbw", "busbw", "#wrong"),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s " % (
            "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", ""),
    ]


def _body(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return " " * 32
    wrong = rec.get("wrong")
    w = "   N/A" if wrong is None else "%6g" % float(wrong)
    return "  %7s  %6s  %6s  %s" % (_fs(rec["time_us"], 7), _fs(rec["algbw"], 6), _fs(rec["busbw"], 6), w)


def row_line(row, by_variant: dict[bool, dict[str, Any]]) -> str:
    """One table line: preamble then out-of-place and in-place bodies."""
    pre = "%12i  %12i  %8s  %6s  %6i" % (row.nbytes, row.count, row.dtype, row.redop, row.root)
    return pre + _body(by_variant.get(False)) + _body(by_variant.get(True))


# The nccl-tests row is 118 characters wide; a terminal narrower than that gets the compact table, which keeps
# what the gates judge (time, algbw, busbw, #wrong per variant) in 77 columns and drops count/type/redop/root
# (the "# Collective:" line above the table names the type).
NCCL_TESTS_WIDTH = 118


def compact_header(time_label: str = "time") -> list[str]:
    return [
        ("# %9s  %-31s  %s" % ("", "out-of-place", "in-place")).rstrip(),
        "# %9s  %8s %7s %7s %6s  %8s %7s %7s %6s" % (
            "size", time_label + " us", "algbw", "busbw", "#wrong", time_label + " us", "algbw", "busbw", "#wrong"),
    ]


def _compact_body(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "%31s" % ""   # as wide as a body: "%8s %7s %7s %6s"
    wrong = rec.get("wrong")
    w = "N/A" if wrong is None else "%g" % float(wrong)
    return "%8s %7s %7s %6s" % (_fs(rec["time_us"], 8).strip(), _fs(rec["algbw"], 7).strip(),
                                _fs(rec["busbw"], 7).strip(), w)


def compact_row(row, by_variant: dict[bool, dict[str, Any]]) -> str:
    """One line of the compact table: the size in binary units, then out-of-place and in-place."""
    from rdmacheck.util.units import human_bytes

    return ("%11s  %s  %s" % (human_bytes(row.nbytes), _compact_body(by_variant.get(False)),
                              _compact_body(by_variant.get(True)))).rstrip()


def use_compact(choice: str, stdout=None, columns: int | None = None) -> bool:
    """--table: 'compact', 'nccl-tests', or 'auto' (compact on a terminal narrower than the nccl-tests row;
    a file or a pipe always gets nccl-tests' layout, which its own tools and `report --import` read)."""
    import shutil
    import sys

    if choice != "auto":
        return choice == "compact"
    out = stdout or sys.stdout
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return False
    return (columns or shutil.get_terminal_size().columns) < NCCL_TESTS_WIDTH


def blank_columns_note(ops: Iterable[str]) -> list[str]:
    """Footer lines saying which columns of the table are blank and why (empty when none is)."""
    from .collectives import COLLECTIVES

    out_only, in_only = [], []
    for op in ops:
        v = COLLECTIVES[op].variants
        if False not in v:
            in_only.append(op)
        elif True not in v:
            out_only.append(op)
    lines = []
    if in_only:
        lines.append(f"out-of-place columns blank for {', '.join(in_only)}: torch.distributed writes the result "
                     "into the input buffer (in place only); nccl-tests measures both")
    if out_only:
        lines.append(f"in-place columns blank for {', '.join(out_only)}: torch.distributed needs separate send "
                     "and receive buffers (out of place only)")
    return lines


def write_csv(records: Iterable[dict[str, Any]], path) -> None:
    """The table as CSV (pandas), written atomically."""
    import pandas as pd

    recs = list(records)
    cols = CSV_COLUMNS + sorted({k for r in recs for k in r if k not in CSV_COLUMNS and not isinstance(r[k], (dict, list))})
    df = pd.DataFrame(recs, columns=cols)
    atomic_write(path, df.to_csv(index=False))
