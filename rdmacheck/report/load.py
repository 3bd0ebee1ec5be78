"""Find and read evidence: files, folders and globs, from any number of nodes and runs."""

from __future__ import annotations

import dataclasses
import glob
import json
from pathlib import Path

from ..errors import UsageError
from ..model import Evidence


@dataclasses.dataclass
class Loaded:
    path: str
    evidence: Evidence


def expand(args: list[str]) -> list[Path]:
    """EVIDENCE arguments -> JSON files, in a stable order, each once.

    A folder contributes its ``*.json`` files (recursively: a cluster run
    writes one sub-folder per node); a pattern with ``*?[`` is globbed here
    too, so quoting it in a shell or CI YAML still works.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append(p)

    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.json") if q.is_file())
            if not found:
                raise UsageError(f"{a}: folder holds no *.json evidence files; pass files written by 'rdmacheck ... --json'")
            for q in found:
                add(q)
        elif p.is_file():
            add(p)
        elif any(c in a for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(a, recursive=True) if Path(m).is_file())
            if not matches:
                raise UsageError(f"{a}: pattern matches no file")
            for q in matches:
                add(q)
        else:
            raise UsageError(f"evidence {a} not found; pass evidence JSON files, folders or globs")
    return out


def read_one(p: Path) -> Evidence:
    try:
        data = json.loads(p.read_bytes())
    except OSError as e:
        raise UsageError(f"cannot read evidence file {p}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{p} is not JSON ({e}); pass evidence written by rdmacheck --json "
                         "(nccl-tests output goes in --import)") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p}: not an rdmacheck evidence document (top level is not an object)")
    try:
        return Evidence.from_dict(data)
    except (ValueError, KeyError, TypeError) as e:
        hint = " (nccl-tests -J output goes in --import)" if "results" in data and "config" in data else ""
        raise UsageError(f"{p}: {e}{hint}") from None


def load(args: list[str]) -> list[Loaded]:
    return [Loaded(str(p), read_one(p)) for p in expand(args)]
