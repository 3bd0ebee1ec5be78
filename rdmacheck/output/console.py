"""What a person reads in the terminal.

The default view fits any terminal down to 80 columns: one line per gate (id, status, the start of
what was observed), then, for each gate that did not pass, its observed/expected/remedy wrapped at
the terminal width on word boundaries.  ``--verbose`` prints the full table (rich) instead.

Colour is off under NO_COLOR or when stdout is not a tty, so piped output stays plain text.  The
width is the terminal's (``COLUMNS`` wins, as for every tool that follows POSIX); piped without
``COLUMNS`` it is 80.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from typing import Iterable, TextIO

from rdmacheck.evidence.model import Result, Status, exit_code

_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}
_ANSI = {Status.PASS: "\x1b[32m", Status.WARN: "\x1b[33m", Status.FAIL: "\x1b[1;31m", Status.SKIP: "\x1b[2m"}
_RESET = "\x1b[0m"
MIN_WIDTH = 40          # below this, wrapping stops being readable; lines may then be wider than the terminal
MAX_ID_WIDTH = 20       # longer gate ids push their own line's status column out, not everyone's
ELLIPSIS = " ..."
_LABELS = ("observed", "expected", "remedy")
_INDENT = "  "


def _console(file: TextIO | None = None):
    from rich.console import Console

    f = file or sys.stdout
    no_color = bool(os.environ.get("NO_COLOR")) or not f.isatty()
    # width: keep a readable table when piped (rich would default to 80)
    return Console(file=f, no_color=no_color, highlight=False, width=None if f.isatty() else 160, soft_wrap=False)


def _colour(file: TextIO) -> bool:
    try:
        return not os.environ.get("NO_COLOR") and file.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width(file: TextIO | None = None) -> int:
    """COLUMNS, else the terminal's width, else 80 (shutil's rule), never below MIN_WIDTH."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)


def status_label(r: Result) -> str:
    return "WAIVED" if (r.waiver and r.status is Status.FAIL) else r.status.value.upper()


def shorten(text: str, width: int) -> str:
    """``text`` on one line in at most ``width`` characters, cut between words (never inside one)."""
    one = " ".join(text.split())
    if len(one) <= width:
        return one
    room = width - len(ELLIPSIS)
    cut = one.rfind(" ", 0, room + 1)
    if cut <= 0:  # a single word longer than the room: nothing whole fits
        return ELLIPSIS.strip() if width >= 3 else ""
    return one[:cut].rstrip(" ,;:") + ELLIPSIS


def wrap(label: str, text: str, width: int) -> list[str]:
    """``  label    text...`` wrapped at ``width`` on spaces; a word is split only when it alone is wider."""
    head = f"{_INDENT}{label:<9} "
    return textwrap.wrap(" ".join(text.split()), width=width, initial_indent=head,
                         subsequent_indent=" " * len(head), break_on_hyphens=False, break_long_words=True)


def summary_lines(results: list[Result], width: int) -> list[tuple[Result, str]]:
    """One (result, line) per gate: id, status, the start of what was observed; every line <= width."""
    idw = min(MAX_ID_WIDTH, max((len(r.id) for r in results), default=0))
    out = []
    for r in results:
        prefix = f"{r.id:<{idw}}  {status_label(r):<6}  "
        out.append((r, prefix + shorten(r.observed or "", max(0, width - len(prefix)))))
    return out


def detail_lines(r: Result, width: int) -> list[str]:
    """The gate's observed, expected and remedy, wrapped; the remedy only when there is one."""
    lines = [f"{r.id} {status_label(r)}"]
    values = {"observed": r.observed, "expected": r.expected, "remedy": r.remedy}
    for label in _LABELS:
        if values[label]:
            lines += wrap(label, values[label], width)
    if r.waiver and r.status is Status.FAIL:
        w = r.waiver
        lines += wrap("waived", f"{w.get('reason', '')} (by {w.get('user', '?')} at {w.get('time', '?')})", width)
    return lines


def _printable(results: Iterable[Result]) -> list[Result]:
    """Copies whose text cannot drive the terminal: .env values, host and interface names are foreign
    text, and an escape in them repainted the screen (sanitize.clean_text shows it as \x1b)."""
    import dataclasses

    from rdmacheck.util.sanitize import clean_text

    return [dataclasses.replace(r, id=clean_text(r.id, one_line=True), observed=clean_text(r.observed),
                                expected=clean_text(r.expected), remedy=clean_text(r.remedy))
            for r in results]


def render_results(results: Iterable[Result], title: str = "", file: TextIO | None = None,
                   verbose: bool = False) -> None:
    from rdmacheck.util.sanitize import clean_text

    results = _printable(results)
    title = clean_text(title, one_line=True)
    if verbose:
        render_table(results, title, file)
        return
    f = file or sys.stdout
    width = terminal_width(f)
    colour = _colour(f)

    def paint(text: str, status: Status, label: str) -> str:
        # colour only the status word (its first occurrence after the id)
        if not colour:
            return text
        i = text.find(label)
        return text[:i] + _ANSI[status] + label + _RESET + text[i + len(label):] if i >= 0 else text

    out = []
    if title:
        out.append(shorten(title, width))
    for r, line in summary_lines(results, width):
        out.append(paint(line, r.status, status_label(r)))
    pending = [r for r in results if r.status is not Status.PASS]
    for r in pending:
        out.append("")
        d = detail_lines(r, width)
        out.append(paint(d[0], r.status, status_label(r)))
        out += d[1:]
    verdict, summary = verdict_line(results)
    out.append("")
    v = verdict if not colour else f"{_ANSI[Status.FAIL if verdict == 'FAIL' else Status.PASS]}{verdict}{_RESET}"
    out.append(f"{v}: {summary}")
    f.write("\n".join(out) + "\n")
    f.flush()


def render_table(results: list[Result], title: str = "", file: TextIO | None = None) -> None:
    from rdmacheck.util.sanitize import clean_text

    results, title = _printable(results), clean_text(title, one_line=True)
    """The full table: every gate's observed, expected and remedy in columns (``--verbose``)."""
    from rich.table import Table

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
    """("PASS"|"FAIL", "3 pass, 1 warn, 0 fail, 2 skip"): the line both the table and --quiet end with.  The
    verdict is the exit code's (evidence.model.exit_code): a gate that could not be judged fails it too."""
    counts = {s: sum(1 for r in results if r.status is s) for s in Status}
    summary = ", ".join(f"{counts[s]} {s.value}" for s in (Status.PASS, Status.WARN, Status.FAIL, Status.SKIP))
    return ("FAIL" if exit_code(results) else "PASS"), summary
