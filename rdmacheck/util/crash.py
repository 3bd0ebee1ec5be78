"""Internal errors: exit 3, one line on the terminal, the traceback in a crash report file.

A user gates a job on the exit code, so an unexpected exception must read as
neither "a gate failed" (1) nor "bad input" (2); and a traceback on the
terminal helps nobody at 3 a.m.  The report (traceback, argv, version,
Python) goes to ``$XDG_STATE_HOME/rdmacheck/`` (``~/.local/state/rdmacheck``
by default), or to the temp folder when that cannot be written.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

EXIT_INTERNAL = 3


def _state_dirs() -> list[Path]:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return [Path(base) / "rdmacheck", Path(tempfile.gettempdir()) / f"rdmacheck-{os.getuid()}"]


def save_crash_report(exc: BaseException, argv: list[str] | None = None, where: str = "") -> Path | None:
    """Write the report; return its path (None when no folder could take it)."""
    from rdmacheck import __version__

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    body = "".join([
        f"rdmacheck {__version__} internal error{(' in ' + where) if where else ''}\n",
        f"time: {stamp}\nargv: {argv if argv is not None else sys.argv}\n",
        f"python: {sys.version.split()[0]} {platform.platform()}\npid: {os.getpid()}\n\n",
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    ])
    for d in _state_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            continue
        for n in range(100):  # two reports of one process within a second (in-process callers) get their own
            p = d / f"crash-{stamp}-{os.getpid()}{f'-{n}' if n else ''}.txt"
            try:
                with open(p, "x", encoding="utf-8", errors="backslashreplace") as f:
                    f.write(body)
                return p
            except FileExistsError:
                continue
            except OSError:
                break
    return None


def report_internal_error(exc: BaseException, argv: list[str] | None = None, where: str = "") -> int:
    """Print the one line, save the report, return exit code 3."""
    from rdmacheck.util.sanitize import clean_text

    path = save_crash_report(exc, argv, where)
    name = type(exc).__name__
    try:
        text = str(exc).strip()
    except Exception:  # an exception whose __str__ fails is still named
        text = ""
    msg = clean_text(text.splitlines()[0][:200], one_line=True) if text else ""
    saved = f"crash report: {path}" if path else "no crash report could be saved"
    try:
        sys.stderr.write(f"rdmacheck: internal error{(' in ' + where) if where else ''}: {name}"
                         f"{(': ' + msg) if msg else ''} ({saved}; please report it)\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return EXIT_INTERNAL
