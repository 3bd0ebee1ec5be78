"""The acceptance report: evidence from many nodes -> one self-contained HTML page.

``load`` finds and reads evidence files, ``consistency`` compares nodes,
``bench`` turns records into tables and plots, ``build`` assembles the model,
``render`` fills the Jinja2 template (autoescape on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdmacheck.util.atomic import atomic_write
from rdmacheck.util.errors import UsageError


def make_report(evidence_args: list[str], out: str | Path, imports: list[str] | None = None,
                title: str | None = None, expected_busbw: float | None = None,
                baseline: str | None = None, write: bool = True) -> dict[str, Any]:
    """Load, build and write the report; returns the model (verdict, reason, ...).

    ``write=False`` leaves the page in ``model["_html"]`` for the caller, which writes it only once
    every other output (JUnit) has been produced too: a failed run replaces no file.
    """
    from rdmacheck.util.sanitize import clean_text
    from ..importers import import_file
    from .build import build
    from .load import Loaded, load
    from .render import render

    skipped: list[str] = []
    loaded = load(evidence_args, skipped) if evidence_args else []
    imported = [Loaded(str(p), import_file(p)) for p in (imports or [])]
    if not loaded and not imported:
        raise UsageError("no rdmacheck evidence found in " + ", ".join(evidence_args)
                         + (f" ({len(skipped)} JSON file(s) skipped: {skipped[0]})" if skipped else ""))
    model = build(loaded, imported, title=title, expected_busbw=expected_busbw)
    model["skipped_files"] = skipped
    # --baseline: the same "what changed" comparison as `rdmacheck diff` (rdmacheck/report/diff.py), per node
    from rdmacheck.report.diff import changed_since

    model["changed_since"] = changed_since(baseline, loaded) if baseline else []
    # evidence text is foreign data: a lone surrogate could not even be encoded as UTF-8
    model["_html"] = clean_text(render(model))
    if write:
        atomic_write(out, model["_html"])
    model["_loaded"] = loaded + imported
    return model
