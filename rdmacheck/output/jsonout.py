"""JSON evidence files, written atomically and read back strictly (rdmacheck/evidence.py)."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write
from ..boundedjson import JsonBoundsError, loads
from ..errors import UsageError
from ..evidence import parse
from ..model import Evidence


def write_evidence(evidence: Evidence, path: str | Path) -> Path:
    return atomic_write(path, evidence.to_json() + "\n")


def parse_json(raw: bytes | str, source: str, hint: str = "") -> object:
    """The JSON of an evidence file, bounded in depth and number range (UsageError naming ``source``)."""
    try:
        return loads(raw)
    except JsonBoundsError as e:
        raise UsageError(f"{source}: {e}; evidence written by rdmacheck --json never holds that") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{source} is not JSON ({e}); pass evidence written by rdmacheck --json{hint}") from None


def read_evidence(path: str | Path) -> Evidence:
    """One evidence file -> Evidence; anything it cannot read with certainty is a UsageError naming the file
    (and the field: an unknown kind or schema version, a field of the wrong type)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"evidence file {p} not found") from None
    except OSError as e:
        raise UsageError(f"cannot read evidence file {p}: {e.strerror or e}") from None
    return parse(parse_json(raw, str(p)), str(p))
