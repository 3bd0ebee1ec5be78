"""The terminal table.

rich renders it; colour is off under NO_COLOR or when stdout is not a tty
(rich's own detection), so piped output stays plain text.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TextIO

from ..model import Result, Status, worst

_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def _console(file: TextIO | None = None):
    from rich.console import Console

    f = file or sys.stdout
    no_color = bool(os.environ.get("NO_COLOR")) or not f.isatty()
    # width: keep a readable table when piped (rich would default to 80)
    return Console(file=f, no_color=no_color, highlight=False, width=None if f.isatty() else 160, soft_wrap=False)


def render_results(results: Iterable[Result], title: str = "", file: TextIO | None = None) -> None:
    from rich.table import Table

    results = list(results)
    con = _console(file)
    table = Table(title=title or None, show_lines=False, expand=False)
    table.add_column("gate", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("observed", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("remedy", overflow="fold")
    for r in results:
        st = r.status.value.upper()
        if r.waiver and r.status is Status.FAIL:
            st += " (waived)"
        table.add_row(r.id, f"[{_STYLE[r.status]}]{st}[/]", r.observed, r.expected,
                      r.remedy if r.status in (Status.FAIL, Status.WARN, Status.SKIP) else "")
    con.print(table)
    verdict, summary = verdict_line(results)
    con.print(f"[{_STYLE[Status.FAIL] if verdict == 'FAIL' else _STYLE[Status.PASS]}]{verdict}[/]: {summary}")


def verdict_line(results: list[Result]) -> tuple[str, str]:
    """("PASS"|"FAIL", "3 pass, 1 warn, 0 fail, 2 skip"): the line both the table and --quiet end with."""
    overall = worst(r.effective_status for r in results)
    counts = {s: sum(1 for r in results if r.status is s) for s in Status}
    summary = ", ".join(f"{counts[s]} {s.value}" for s in (Status.PASS, Status.WARN, Status.FAIL, Status.SKIP))
    return ("FAIL" if overall is Status.FAIL else "PASS"), summary
