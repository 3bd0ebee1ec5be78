"""Convert schema-1 evidence files to schema 2, once: ``python3 -m rdmacheck.evidence_v1 FILE...``.

rdmacheck reads exactly one schema (rdmacheck/evidence/schema.py) and refuses a schema-1 file with this
command in the message, rather than guessing what an old file meant.  What changes from 1 to 2:

* ``schema_version`` becomes 2;
* bench context gains ``source: "rdmacheck"`` when it had none (schema 1 left it out for rdmacheck's
  own runs);
* every bench record of an rdmacheck run gains ``calls``, the collective calls between the size's
  hooks, which bench.wire multiplies by the bytes per call.  Schema-1 runners did not count them; they
  are rebuilt from the runner's steps of that time (:func:`legacy_calls`), the rule bench.wire used
  to apply at every read;
* then the document must pass the schema-2 checks, field by field, or nothing is written.

Files are rewritten in place, atomically; a file already at schema 2 is left alone.  Exit 0 when
every file converted (or was current), 2 naming the first file and field that cannot be.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any, Iterable, Mapping

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.schema import parse
from rdmacheck.evidence.model import SCHEMA_VERSION


def legacy_calls(record: Mapping[str, Any], context: Mapping[str, Any]) -> int:
    """Collective calls of one record as a schema-1 runner issued them (rdmacheck/bench/runner.py ``_measure``
    before it counted): warm-up, 3 estimate calls (time-based iterations), the timed calls, the --check
    call and, with a CUDA graph, one side-stream call plus one replay of the captured block;
    ``--graph auto`` also sampled a replay, 3 eager calls and an eager block of the same length before
    choosing (skipped when a call took >= 1 ms with time-based iterations).  Measured on 2x H100 over a
    veth: this count met the NIC counters at 1.00x."""
    auto = context.get("graph") == "auto"
    time_based = not isinstance(context.get("iters"), int)
    iters = int(record.get("iters") or 0)
    per_graph = min(iters, 100)
    n = int(context.get("warmup") or 0) + iters
    if time_based:
        n += 3
    captured = bool(record.get("graph")) or context.get("graph") is True
    if auto:
        captured = bool(record.get("graph")) or not (time_based and float(record.get("time_us") or 0) >= 1000)
    if captured:
        n += 1 + per_graph
        if auto:
            n += per_graph + 3 + per_graph
    if context.get("check"):
        n += 1
    return n


def convert(doc: Any, source: str = "evidence") -> dict[str, Any]:
    """A schema-1 document -> the schema-2 document (a new dict); a schema-2 one is returned as it is.
    Raises EvidenceError (a UsageError) naming ``source`` and the field when the result is not valid."""
    if not isinstance(doc, dict) or doc.get("tool") != "rdmacheck":
        raise UsageError(f"{source}: not an rdmacheck evidence document")
    version = doc.get("schema_version")
    if version == SCHEMA_VERSION:
        parse(doc, source)
        return doc
    if version != 1 or isinstance(version, bool):
        raise UsageError(f"{source}: field 'schema_version': {version!r:.40}; only schema 1 converts to {SCHEMA_VERSION}")
    out = copy.deepcopy(doc)
    out["schema_version"] = SCHEMA_VERSION
    if out.get("kind") == "bench" and isinstance(out.get("context"), dict):
        ctx = out["context"]
        ctx.setdefault("source", "rdmacheck")
        if ctx["source"] == "rdmacheck":
            for r in out.get("records") or []:
                if isinstance(r, dict) and r.get("calls") is None:
                    r["calls"] = legacy_calls(r, ctx)
    parse(out, source)   # the converted document must be valid schema 2, field by field
    return out


def convert_files(paths: Iterable[str]) -> list[str]:
    from rdmacheck.util.atomic import atomic_write
    from rdmacheck.evidence.jsonout import parse_json
    from rdmacheck.util.inputs import EVIDENCE_MAX, read_input_file

    said = []
    for p in paths:
        raw = read_input_file(p, "evidence file", EVIDENCE_MAX)
        doc = parse_json(raw, p)
        new = convert(doc, p)
        if new is doc:
            said.append(f"{p}: already schema {SCHEMA_VERSION}")
            continue
        atomic_write(p, json.dumps(new, indent=2) + "\n")
        said.append(f"{p}: schema 1 -> {SCHEMA_VERSION}")
    return said


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m rdmacheck.evidence_v1", description=__doc__.split("\n\n")[0],
                                 epilog="example: python3 -m rdmacheck.evidence_v1 reports/*.json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", metavar="FILE", help="schema-1 evidence JSON, rewritten in place")
    args = ap.parse_args(argv)
    try:
        for line in convert_files(args.files):
            print(line)
    except UsageError as e:
        print(f"rdmacheck: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
