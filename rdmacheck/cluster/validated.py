"""Validated-evidence index: when each node last passed isolation, for ``--skip-validated-within``.

One small JSON file per node, ``reports/validated/<label>.json`` by default
(``--validated-dir``), written when a node passes ``cluster --isolate``
(cleared, not flaky) and removed when it fails one::

    {"node": "spark-02", "node_id": "...", "time": "2026-12-01T19:40:00Z", "epoch": 1796154000.0,
     "evidence": "reports/cluster-.../cluster.json", "busbw": 11.8}

A node whose record is younger than DURATION is not measured again; its
record is cited in the run's cluster.json.  Pure except ``read``/``write``/``drop``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from rdmacheck.util.atomic import atomic_write
from rdmacheck.util.errors import UsageError
from .nodes import safe_name

DEFAULT_DIR = Path("reports") / "validated"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, flag: str = "--skip-validated-within") -> float:
    """'90s', '30m', '12h', '7d', '1h30m' -> seconds (> 0).  Anything else: a usage error naming the flag."""
    s = (text or "").strip()  # lower-case units only: "M" could be read as months
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s) or not math.isfinite(total) or total <= 0:
        raise UsageError(f"{flag} {text!r}: write a positive duration with a unit, e.g. 90s, 30m, 12h, 7d or 1h30m")
    return total


def path_for(folder: Path, label: str) -> Path:
    return Path(folder) / f"{safe_name(label)}.json"


def read(folder: Path, labels: list[str]) -> dict[str, dict[str, Any]]:
    """label -> its record, for the labels that have a readable one (a damaged record counts as none)."""
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        try:
            rec = json.loads(path_for(folder, label).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("node") == label and isinstance(rec.get("epoch"), (int, float)):
            out[label] = rec
    return out


def fresh(records: dict[str, dict[str, Any]], within_s: float, now: float) -> dict[str, dict[str, Any]]:
    """The records younger than ``within_s`` at ``now`` (a record from the future counts as not fresh)."""
    return {k: r for k, r in records.items() if 0 <= now - float(r["epoch"]) < within_s}


def write(folder: Path, label: str, record: dict[str, Any]) -> None:
    atomic_write(path_for(folder, label), json.dumps(dict(record, node=label), indent=2, sort_keys=True) + "\n")


def drop(folder: Path, label: str) -> None:
    try:
        path_for(folder, label).unlink()
    except FileNotFoundError:
        pass
