"""Typed evidence (schema 2): what each kind's ``context`` and a bench record hold, field by field.

:class:`rdmacheck.evidence.model.Evidence` is the document (kind, host, time, results, context, records) and
checks the kind and the schema version; this module holds the per-kind contract and is the one place
readers get a field from:

* :func:`parse` (every file reader's entry: ``Evidence.from_dict`` for the document, then
  :func:`validate`) checks every typed field of the kind's context and
  of each bench record, raising :class:`EvidenceError` naming the file and the field, e.g.
  ``records[3].busbw``.  Fields not listed here are kept (``raw``) but no reader relies on them.
* :func:`context_of` gives the typed context (:class:`BenchContext`, :class:`PreflightContext`,
  :class:`LaunchContext`, :class:`ClusterContext`); :func:`bench_records` the typed records.
* :func:`preflight_facts` and :func:`run_env` are the only accessors of a node's recorded facts and
  env: the report's cross-node comparison reads through them, so a new facts shape is one edit here.

Producers keep writing plain dicts (``Evidence.context``/``records``), so writing stays cheap; the
typed view is what every reader of a file sees.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rdmacheck.evidence.model import KINDS, Evidence, EvidenceError

_NUM = (int, float)


def _is(v: Any, types: tuple[type, ...]) -> bool:
    if isinstance(v, bool) and bool not in types:
        return False
    if isinstance(v, float) and not math.isfinite(v):
        return False
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1 << 63:
        return False  # JSON allows 400 digits; no field holds more than int64 (float() of it overflows)
    return isinstance(v, types)


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "an object", list: "a list"}


def _field(d: dict[str, Any], key: str, types: tuple[type, ...], where: str, source: str, *,
           required: bool = False, minimum: float | None = None, choices: tuple[Any, ...] | None = None,
           also: tuple[Any, ...] = ()) -> Any:
    """d[key] when it has one of ``types`` or is one of ``also`` (or is null/absent and not required),
    and is one of ``choices`` when given; else EvidenceError naming the field."""
    v = d.get(key)
    if v is None:
        if required:
            raise EvidenceError(source, f"{where}{key}", "missing")
        return None
    if v in also and not isinstance(v, bool):
        return v
    if choices is not None and v not in choices:
        raise EvidenceError(source, f"{where}{key}", f"{v!r:.40} is not one of {', '.join(map(repr, choices))}")
    if not _is(v, types):
        words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types if not (t is int and float in types))
        raise EvidenceError(source, f"{where}{key}", f"{v!r:.40} must be {words} (finite)")
    if minimum is not None and _is(v, _NUM) and v < minimum:
        raise EvidenceError(source, f"{where}{key}", f"{v!r} is below {minimum:g}")
    return v


# ------------------------------------------------------------------ bench records


@dataclasses.dataclass(frozen=True)
class BenchRecord:
    """One measurement: an (op, size, variant) of ``rdmacheck bench`` or of an imported nccl-tests run.

    GB/s = 1e9 B/s; ``time_us`` is the max over ranks of the mean time per call; ``calls`` is every
    collective call the runner issued for this variant between the size's before_size and after_size
    hooks (warm-up, estimate, timed, check, graph capture and sampling), which is what a NIC counter
    sampled around the size saw.  ``extra`` keeps what hooks added (``wire``: the path proof's counters).
    """

    op: str
    bytes: int
    busbw: float | None = None
    algbw: float | None = None
    time_us: float | None = None
    in_place: bool = False
    wrong: int | None = None
    count: int | None = None
    dtype: str | None = None
    redop: str | None = None
    root: int | None = None
    world_size: int | None = None
    backend: str | None = None
    iters: int | None = None
    graph: bool | None = None
    calls: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, source: str, where: str) -> "BenchRecord":
        if not isinstance(d, dict):
            raise EvidenceError(source, where.rstrip("."), "a bench record must be an object")
        f = lambda k, t, **kw: _field(d, k, t, where, source, **kw)  # noqa: E731
        known = {x.name for x in dataclasses.fields(cls)} - {"extra"}
        return cls(
            op=f("op", (str,), required=True), bytes=f("bytes", (int,), required=True, minimum=0),
            busbw=f("busbw", _NUM, minimum=0), algbw=f("algbw", _NUM, minimum=0), time_us=f("time_us", _NUM, minimum=0),
            in_place=bool(f("in_place", (bool,))), wrong=f("wrong", (int,), minimum=0), count=f("count", (int,)),
            dtype=f("dtype", (str,)), redop=f("redop", (str,)), root=f("root", (int,)),
            world_size=f("world_size", (int,), minimum=1), backend=f("backend", (str,)),
            iters=f("iters", (int,), minimum=0), graph=f("graph", (bool,)), calls=f("calls", (int,), minimum=0),
            extra={k: v for k, v in d.items() if k not in known},
        )


# ------------------------------------------------------------------ per-kind context


@dataclasses.dataclass(frozen=True)
class BenchContext:
    """``rdmacheck bench`` (source "rdmacheck") or an imported nccl-tests run (source "nccl-tests")."""

    source: str = "rdmacheck"
    world_size: int | None = None
    backend: str | None = None
    plateau_min_bytes: int | None = None      # the bench.busbw threshold the run judged with
    expect_busbw: float | None = None         # GB/s the run was gated against
    graph: Any = None                         # True, False or "auto"
    warmup: int | None = None
    check: bool | None = None
    complete: bool | None = None
    torch_version: str | None = None
    nccl_version: str | None = None
    nccl_tests_version: str | None = None
    avg_busbw: float | None = None            # nccl-tests' own "Avg bus bandwidth" (shown, never judged)
    notes: tuple[str, ...] = ()
    path_proof: dict[str, Any] | None = None  # the path-proof hook's per-node summary
    config: dict[str, Any] | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def expected_busbw(self) -> float | None:
        return self.expect_busbw

    @classmethod
    def from_dict(cls, c: dict[str, Any], source: str) -> "BenchContext":
        f = lambda k, t, **kw: _field(c, k, t, "context.", source, **kw)  # noqa: E731
        notes = f("notes", (list,)) or []
        return cls(
            source=f("source", (str,), choices=("rdmacheck", "nccl-tests")) or "rdmacheck",
            world_size=f("world_size", (int,), minimum=1), backend=f("backend", (str,)),
            plateau_min_bytes=f("plateau_min_bytes", (int,), minimum=1), expect_busbw=f("expect_busbw", _NUM, minimum=0),
            graph=f("graph", (bool,), also=("auto",)), warmup=f("warmup", (int,), minimum=0),
            check=f("check", (bool,)), complete=f("complete", (bool,)),
            torch_version=f("torch_version", (str,)), nccl_version=f("nccl_version", (str,)),
            nccl_tests_version=f("nccl_tests_version", (str,)), avg_busbw=f("avg_busbw", _NUM),
            notes=tuple(str(n) for n in notes), path_proof=f("path_proof", (dict,)), config=f("config", (dict,)),
            raw=c,
        )


def _profile_min_busbw(config: dict[str, Any] | None, source: str) -> float | None:
    prof = (config or {}).get("profile")
    if prof is None:
        return None
    if not isinstance(prof, dict):
        raise EvidenceError(source, "context.config.profile", "must be an object")
    return _field(prof, "min_busbw", _NUM, "context.config.profile.", source, minimum=0)


@dataclasses.dataclass(frozen=True)
class PreflightContext:
    """``rdmacheck preflight``: the config it judged under and the facts it gathered."""

    config: dict[str, Any] | None = None      # Config.to_dict(): env, env_file, profile
    facts: dict[str, Any] | None = None       # the node's facts (preflight.collect_facts)
    min_busbw: float | None = None            # config.profile.min_busbw
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def expected_busbw(self) -> float | None:
        return self.min_busbw

    @classmethod
    def from_dict(cls, c: dict[str, Any], source: str) -> "PreflightContext":
        config = _field(c, "config", (dict,), "context.", source)
        if config is not None:
            _field(config, "env", (dict,), "context.config.", source)
        return cls(config=config, facts=_field(c, "facts", (dict,), "context.", source),
                   min_busbw=_profile_min_busbw(config, source), raw=c)


@dataclasses.dataclass(frozen=True)
class LaunchContext(PreflightContext):
    """``rdmacheck launch``: the preflight's config plus the container it started (or would have)."""

    role: str | None = None
    dry_run: bool | None = None
    launched: bool | None = None

    @classmethod
    def from_dict(cls, c: dict[str, Any], source: str) -> "LaunchContext":
        base = PreflightContext.from_dict(c, source)
        return cls(config=base.config, facts=base.facts, min_busbw=base.min_busbw, raw=c,
                   role=_field(c, "role", (str,), "context.", source),
                   dry_run=_field(c, "dry_run", (bool,), "context.", source),
                   launched=_field(c, "launched", (bool,), "context.", source))


@dataclasses.dataclass(frozen=True)
class ClusterContext:
    """``rdmacheck cluster``: the fleet document (host "ray-cluster", with ``nodes``) or one node's file."""

    nodes: list[Any] | None = None            # present on the fleet document only
    pairwise: dict[str, Any] | None = None    # the --pairwise matrix
    expect_busbw: float | None = None
    config: dict[str, Any] | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def expected_busbw(self) -> float | None:
        return self.expect_busbw if self.expect_busbw is not None else _profile_min_busbw(self.config, "")

    @property
    def is_fleet(self) -> bool:
        return self.nodes is not None

    @classmethod
    def from_dict(cls, c: dict[str, Any], source: str) -> "ClusterContext":
        f = lambda k, t, **kw: _field(c, k, t, "context.", source, **kw)  # noqa: E731
        config = f("config", (dict,))
        _profile_min_busbw(config, source)
        return cls(nodes=f("nodes", (list,)), pairwise=f("pairwise", (dict,)),
                   expect_busbw=f("expect_busbw", _NUM, minimum=0), config=config, raw=c)


@dataclasses.dataclass(frozen=True)
class LinkContext:
    """``rdmacheck link``: the peer, the engine, this node's ports as probed, and each probe's outcome."""

    peer: str | None = None
    engine: str | None = None
    ports: list[Any] | None = None            # link.PortPlan.to_dict() per selected port
    runs: list[Any] | None = None             # {mode, local_port, remote_port, peer, rate_gbps, result}
    config: dict[str, Any] | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def expected_busbw(self) -> float | None:
        return None

    @classmethod
    def from_dict(cls, c: dict[str, Any], source: str) -> "LinkContext":
        f = lambda k, t, **kw: _field(c, k, t, "context.", source, **kw)  # noqa: E731
        runs = f("runs", (list,))
        for i, r in enumerate(runs or []):
            if not isinstance(r, dict) or not isinstance(r.get("result"), dict):
                raise EvidenceError(source, f"context.runs[{i}]", "must be an object with a result object")
            _field(r, "rate_gbps", _NUM, f"context.runs[{i}].", source, minimum=0)
        return cls(peer=f("peer", (str,)), engine=f("engine", (str,)), ports=f("ports", (list,)), runs=runs,
                   config=f("config", (dict,)), raw=c)


CONTEXTS = {"bench": BenchContext, "preflight": PreflightContext, "launch": LaunchContext, "cluster": ClusterContext,
            "link": LinkContext}
assert set(CONTEXTS) == set(KINDS)


def context_of(ev: Evidence, source: str = "evidence"):
    """The typed context of ``ev`` (raises EvidenceError for a field of the wrong type)."""
    return CONTEXTS[ev.kind].from_dict(ev.context if isinstance(ev.context, dict) else {}, source)


def bench_records(ev: Evidence, source: str = "evidence") -> list[BenchRecord]:
    return [BenchRecord.from_dict(r, source, f"records[{i}].") for i, r in enumerate(ev.records)]


def parse(doc: Any, source: str) -> Evidence:
    """The one way a reader turns a JSON document into Evidence: the document (kind, schema version,
    results) and then every typed field of its kind; EvidenceError naming ``source`` and the field."""
    ev = Evidence.from_dict(doc, source)
    validate(ev, source)
    return ev


def validate(ev: Evidence, source: str) -> None:
    """Every typed field of ``ev``'s context and records; raises EvidenceError naming ``source`` and the field."""
    context_of(ev, source)
    if ev.kind == "bench":
        # a preflight (or launch) body relabelled "bench" would have its node gates judged as a bench run's
        if isinstance(ev.context, dict) and "facts" in ev.context:
            raise EvidenceError(source, "kind", "'bench', but the context holds node facts, as preflight and launch "
                                                "evidence do: the document's kind was changed; use the file rdmacheck wrote")
        for i, r in enumerate(ev.results):
            if not r.id.startswith("bench."):
                raise EvidenceError(source, f"results[{i}].id", f"{r.id[:40]!r} is not a bench gate (bench.*), but kind "
                                                                "is 'bench': the document's kind was changed")
    if ev.records and ev.kind != "bench":
        raise EvidenceError(source, "records", f"only bench evidence carries records, not {ev.kind}")
    bench_records(ev, source)


# ------------------------------------------------------------------ one accessor per concept


def preflight_facts(ev: Evidence) -> dict[str, Any]:
    """The node facts a preflight (or launch) recorded, {} when it recorded none.

    The one place the report reads ``context.facts``: when the facts become a typed record
    (NodeFacts), this accessor is what changes."""
    ctx = context_of(ev) if ev.kind in ("preflight", "launch") else None
    return dict(ctx.facts or {}) if ctx is not None else {}


def run_env(ev: Evidence) -> dict[str, str]:
    """The env (``.env`` plus process environment) the run was judged under: ``context.config.env``."""
    ctx = ev.context if isinstance(ev.context, dict) else {}
    cfg = ctx.get("config") if isinstance(ctx.get("config"), dict) else {}
    env = cfg.get("env") if isinstance(cfg.get("env"), dict) else {}
    return {str(k): str(v) for k, v in env.items() if v is not None}


def expected_busbw(ev: Evidence) -> float | None:
    """The GB/s this run was gated against (bench/cluster: the expectation; preflight/launch: the profile's)."""
    return context_of(ev).expected_busbw
