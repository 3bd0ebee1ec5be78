"""JSON evidence files, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write
from ..errors import UsageError
from ..model import Evidence


def write_evidence(evidence: Evidence, path: str | Path) -> Path:
    return atomic_write(path, evidence.to_json() + "\n")


def read_evidence(path: str | Path) -> Evidence:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"evidence file {p} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read evidence file {p}: {e}") from None
    except ValueError as e:
        raise UsageError(f"{p} is not JSON ({e}); pass evidence written by rdmacheck --json") from None
    try:
        return Evidence.from_dict(data)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{p}: {e}") from None
