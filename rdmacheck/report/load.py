"""Find and read evidence: files, folders and globs, from any number of nodes and runs."""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.schema import parse
from rdmacheck.evidence.model import Evidence


class NotEvidence(UsageError):
    """Valid JSON that is not an rdmacheck evidence document."""


@dataclasses.dataclass
class Loaded:
    path: str
    evidence: Evidence


def expand(args: list[str]) -> list[Path]:
    return [p for p, _ in expand_marked(args)]


def expand_marked(args: list[str]) -> list[tuple[Path, bool]]:
    """EVIDENCE arguments -> JSON files, in a stable order, each once.

    A folder contributes its ``*.json`` files (recursively: a cluster run
    writes one sub-folder per node); a pattern with ``*?[`` is globbed here
    too, so quoting it in a shell or CI YAML still works.
    """
    out: list[tuple[Path, bool]] = []   # (path, came from a folder)
    seen: set[Path] = set()

    def add(p: Path, from_folder: bool = False) -> None:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append((p, from_folder))

    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.json") if q.is_file())
            if not found:
                raise UsageError(f"{a}: folder holds no *.json evidence files; pass files written by 'rdmacheck ... --json'")
            for q in found:
                add(q, True)
        elif p.is_file():
            add(p)
        elif any(c in a for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(a, recursive=True) if Path(m).is_file())
            if not matches:
                raise UsageError(f"{a}: pattern matches no file")
            for q in matches:
                add(q, True)   # like a folder: a pattern may sweep up other JSON
        elif p.exists():
            from rdmacheck.util.inputs import non_regular_kind

            raise UsageError(f"evidence {a}: is {non_regular_kind(p) or 'not readable'}, not a regular file; "
                             "pass evidence JSON files, folders or globs")
        else:
            raise UsageError(f"evidence {a} not found; pass evidence JSON files, folders or globs")
    return out


def read_one(p: Path) -> Evidence:
    from rdmacheck.util.inputs import EVIDENCE_MAX, read_input_file
    from rdmacheck.evidence.jsonout import parse_json

    raw = read_input_file(p, "evidence", EVIDENCE_MAX)
    data = parse_json(raw, str(p), " (nccl-tests output goes in --import)")
    hint = " (nccl-tests -J output goes in --import)" if isinstance(data, dict) and "results" in data and "config" in data else ""
    if not isinstance(data, dict):
        raise NotEvidence(f"{p}: not an rdmacheck evidence document (top level is not an object)")
    if data.get("tool") != "rdmacheck":
        raise NotEvidence(f"{p}: not an rdmacheck evidence document{hint}")
    # an rdmacheck document this version cannot read (unknown kind or schema, a mistyped field) is an
    # error wherever it was found: skipping it could turn a failing node into a passing page
    return parse(data, str(p))


def load(args: list[str], skipped: list[str] | None = None) -> list[Loaded]:
    """Read every evidence file.  A JSON file found inside a folder (or by a glob) that is not rdmacheck
    evidence (a cluster run's other outputs, a pasted config) is skipped and listed in
    ``skipped``; named on the command line, it is an error, as is any file that is not JSON."""
    out = []
    for p, from_folder in expand_marked(args):
        try:
            out.append(Loaded(str(p), read_one(p)))
        except NotEvidence as e:
            if not from_folder or skipped is None:
                raise
            skipped.append(str(e))
    return out
