"""The acceptance report: evidence from many nodes -> one self-contained HTML page.

``load`` finds and reads evidence files, ``consistency`` compares nodes,
``bench`` turns records into tables and plots, ``build`` assembles the model,
``render`` fills the Jinja2 template (autoescape on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_write


def make_report(evidence_args: list[str], out: str | Path, imports: list[str] | None = None,
                title: str | None = None, expected_busbw: float | None = None) -> dict[str, Any]:
    """Load, build and write the report; returns the model (verdict, reason, ...)."""
    from ..importers import import_file
    from .build import build
    from .load import Loaded, load
    from .render import render

    loaded = load(evidence_args) if evidence_args else []
    imported = [Loaded(str(p), import_file(p)) for p in (imports or [])]
    model = build(loaded, imported, title=title, expected_busbw=expected_busbw)
    atomic_write(out, render(model))
    model["_loaded"] = loaded + imported
    return model
