"""JSON evidence files, written atomically and read back strictly (rdmacheck/evidence/schema.py)."""

from __future__ import annotations

from pathlib import Path

from rdmacheck.util.atomic import atomic_write
from rdmacheck.evidence.boundedjson import JsonBoundsError, loads
from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.schema import parse
from rdmacheck.evidence.model import Evidence


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
    from rdmacheck.util.inputs import EVIDENCE_MAX, read_input_file

    p = Path(path)
    raw = read_input_file(p, "evidence file", EVIDENCE_MAX, missing=f"evidence file {p} not found")
    return parse(parse_json(raw, str(p)), str(p))
