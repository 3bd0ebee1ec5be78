"""Render the report model to one self-contained HTML page (Jinja2, autoescape on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdmacheck.util.units import gbs

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def environment():
    import jinja2

    # autoescape=True for every template, whatever its name: host names,
    # interface names and firmware strings come from hosts we do not trust.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["gbs"] = gbs
    env.filters["us"] = lambda v: "" if v is None else (f"{v:.1f}" if v >= 100 else f"{v:.2f}")
    env.filters["num"] = lambda v: "" if v is None else (f"{int(v)}" if float(v).is_integer() else f"{v:g}")
    return env


def render(model: dict[str, Any]) -> str:
    return environment().get_template("report.html.j2").render(**model)
