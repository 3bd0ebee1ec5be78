"""The result model every command shares.

A *Result* is one gate's verdict: a stable id (``rdma.gid``), a status, what
was observed, what was expected and what to do about it.  An *Evidence*
document wraps the results of one run (preflight, bench, launch, cluster) with
enough context (host, time, tool version, schema version) to be read back
months later by ``rdmacheck report``.

Nothing in here reads the host: checks build Results from facts, outputs
render them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import getpass
import json
import os
import socket
from typing import Any, Iterable

from rdmacheck import __version__
from rdmacheck.util.errors import UsageError

# Version 2 (rdmacheck 0.x, this push): every field of the per-kind context and of a bench record is
# typed (rdmacheck/evidence/schema.py), bench records carry ``calls`` (collective calls between the
# before_size and after_size hooks, counted by the runner) and bench context carries ``source``.
# Version 1 files are refused with the command that converts them (rdmacheck/evidence/v1.py).
SCHEMA_VERSION = 2
KINDS = ("preflight", "bench", "launch", "cluster", "link")


class EvidenceError(UsageError):
    """An evidence document this rdmacheck cannot read: names the file and the field (exit 2)."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: field {field!r}: {problem}")


class Status(str, enum.Enum):
    """Gate outcome.  Order matters: ``worst()`` picks the highest."""

    PASS = "pass"
    SKIP = "skip"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.PASS: 0, Status.SKIP: 1, Status.WARN: 2, Status.FAIL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (PASS for an empty input)."""
    out = Status.PASS
    for s in statuses:
        if s.rank > out.rank:
            out = s
    return out


@dataclasses.dataclass
class Result:
    """One gate's verdict.

    ``observed``/``expected`` are short human strings; ``details`` carries
    structured data (per-port rows, the predicted GID ...) that the JSON and
    HTML outputs keep and the console may summarise.
    """

    id: str
    status: Status
    observed: str = ""
    expected: str = ""
    remedy: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Set by the launcher when an operator accepts a failing gate explicitly.
    waiver: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def unjudged(self) -> str | None:
        """Why this gate could not be judged (a probe timed out), None when it was judged or simply does not
        apply.  Such a gate is a SKIP that never passes a run: exit 1, and the report does not say PASS."""
        why = self.details.get("unjudged") if isinstance(self.details, dict) else None
        return str(why) if self.status is Status.SKIP and why else None

    @property
    def effective_status(self) -> Status:
        """A waived failure counts as a warning for the exit code."""
        if self.waiver and self.status is Status.FAIL:
            return Status.WARN
        return self.status

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        if d["waiver"] is None:
            del d["waiver"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        return cls(
            id=str(d["id"]),
            status=Status(d["status"]),
            observed=str(d.get("observed", "")),
            expected=str(d.get("expected", "")),
            remedy=str(d.get("remedy", "")),
            details=dict(d.get("details") or {}),
            waiver=d.get("waiver"),
        )


def exit_code(results: Iterable[Result]) -> int:
    """0 when nothing failed, 1 when any gate failed (waived failures don't) or could not be judged."""
    return 1 if any(r.effective_status is Status.FAIL or r.unjudged for r in results) else 0


def could_not_judge(gid: str, why: str, expected: str = "", remedy: str = "", **details: Any) -> Result:
    """A gate whose probe did not answer: neither PASS nor FAIL (docs/failure-semantics.md)."""
    return Result(gid, Status.SKIP, observed=f"could not judge: {why}", expected=expected, remedy=remedy,
                  details={"unjudged": why, **details})


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry inside some containers
        return str(os.getuid())


@dataclasses.dataclass
class Evidence:
    """One run's document: what ran, where, when, and every result.

    ``kind`` is ``preflight``, ``bench``, ``launch`` or ``cluster``.
    ``context`` holds run-wide facts (env used, profile, versions, the
    per-rank hosts of a bench ...); ``records`` holds tabular data such as
    bench rows (one dict per size and op).
    """

    kind: str
    results: list[Result] = dataclasses.field(default_factory=list)
    host: str = dataclasses.field(default_factory=socket.gethostname)
    time: str = dataclasses.field(default_factory=now_iso)
    tool_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the ``status`` a document read back says of itself (from_dict); None for one built here
    declared_status: Status | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def status(self) -> Status:
        return worst(r.effective_status for r in self.results)

    @property
    def exit_code(self) -> int:
        return exit_code(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tool": "rdmacheck",
            "tool_version": self.tool_version,
            "kind": self.kind,
            "host": self.host,
            "time": self.time,
            "status": self.status.value,
            "context": self.context,
            "results": [r.to_dict() for r in self.results],
            "records": self.records,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, d: Any, source: str = "evidence") -> "Evidence":
        """A document written by ``to_dict`` -> Evidence; anything else raises EvidenceError naming
        ``source`` (the file) and the field.  Never guesses: an unknown kind or schema version is refused.
        The document level only: readers of files use ``rdmacheck.evidence.schema.parse``, which also checks
        the kind's context and the bench records field by field."""
        if not isinstance(d, dict):
            raise EvidenceError(source, "(top level)", "not a JSON object; pass evidence written by rdmacheck --json")
        if d.get("tool") != "rdmacheck":
            raise EvidenceError(source, "tool", "not an rdmacheck evidence document")
        if "schema_version" not in d:
            raise EvidenceError(source, "schema_version", "missing; pass evidence written by rdmacheck --json")
        version = d["schema_version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise EvidenceError(source, "schema_version", f"{_short(version)} is not an integer version")
        if version == 1:
            raise EvidenceError(source, "schema_version",
                                f"schema 1 evidence (this rdmacheck reads schema {SCHEMA_VERSION}); convert it once with "
                                f"'python3 -m rdmacheck.evidence_v1 {source}'")
        if version != SCHEMA_VERSION:
            newer = " is newer than this rdmacheck understands; upgrade rdmacheck" if version > SCHEMA_VERSION else " is unknown"
            raise EvidenceError(source, "schema_version", f"schema {version}{newer} (this one reads schema {SCHEMA_VERSION})")
        if "kind" not in d:
            raise EvidenceError(source, "kind", f"missing; one of {', '.join(KINDS)}")
        if d["kind"] not in KINDS:
            raise EvidenceError(source, "kind", f"{_short(d['kind'])} is not an evidence kind this rdmacheck knows "
                                                f"({', '.join(KINDS)})")
        for key, typ, what in (("host", str, "a string"), ("time", str, "a string"), ("tool_version", str, "a string"),
                               ("context", dict, "an object"), ("results", list, "a list"), ("records", list, "a list")):
            if key in d and d[key] is not None and not isinstance(d[key], typ):
                raise EvidenceError(source, key, f"must be {what}, not {type(d[key]).__name__}")
        declared = d.get("status")
        if declared is not None and declared not in _STATUS_VALUES:
            raise EvidenceError(source, "status", f"{_short(declared)} is not one of {', '.join(_STATUS_VALUES)}")
        results = []
        for i, r in enumerate(d.get("results") or []):
            if not isinstance(r, dict) or not isinstance(r.get("id"), str) or r.get("status") not in _STATUS_VALUES:
                raise EvidenceError(source, f"results[{i}]", "must be an object with a string id and a status "
                                                             f"({', '.join(_STATUS_VALUES)})")
            if r.get("details") is not None and not isinstance(r["details"], dict):
                raise EvidenceError(source, f"results[{i}].details", "must be an object")
            if r.get("waiver") is not None and not isinstance(r["waiver"], dict):
                raise EvidenceError(source, f"results[{i}].waiver", "must be an object")
            results.append(Result.from_dict(r))
        return cls(
            kind=d["kind"],
            results=results,
            host=str(d.get("host") or ""),
            time=str(d.get("time") or ""),
            tool_version=str(d.get("tool_version") or ""),
            schema_version=version,
            context=dict(d.get("context") or {}),
            records=list(d.get("records") or []),
            declared_status=None if declared is None else Status(declared),
        )


_STATUS_VALUES = tuple(s.value for s in Status)


def _short(v: Any) -> str:
    t = repr(v)
    return t if len(t) <= 40 else t[:39] + "…"
