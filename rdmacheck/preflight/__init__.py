"""Preflight, the main job: one node's facts, gathered once, judged by every gate.

    root.py        HostRoot: every host path read through one root; --root DIR | FILE.tar.gz opened here
    facts/         one reader per source (sysfs, procfs, NVML, pyverbs, netlink), no judgement
    gather.py      phase 1: root + config -> NodeFacts (every read and probe, each bounded); derive()
    nodefacts.py   the typed, versioned, serialisable record of one node
    registry.py    the one ordered list of gates, with their ids and metadata
    checks/        the gates: pure functions of NodeFacts + Config -> [Result]
    judge.py       phase 2: judge(), the evidence document, re-judging recorded facts (--facts)
    snapshot.py    `rdmacheck snapshot`: what phase 1 read, copied for a replay

:func:`run` is the one front door: ``rdmacheck preflight``, ``launch``, ``watch``, ``diff`` and the
cluster's per-node task all call it.  Imports happen inside it, so that importing a reader from this
package stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rdmacheck.config import Config
    from rdmacheck.evidence.model import Evidence, Result
    from rdmacheck.preflight.nodefacts import NodeFacts
    from rdmacheck.preflight.root import HostRoot


@dataclasses.dataclass
class Run:
    """One preflight: the facts it judged, the configuration it judged them under, the results."""

    facts: "NodeFacts"
    config: "Config"
    results: "list[Result]"
    root: "HostRoot | None"           # None when the facts came from an evidence file (--facts)

    def evidence(self) -> "Evidence":
        from rdmacheck.preflight.judge import evidence_for

        return evidence_for(self.facts, self.config, self.results)

    def summary(self) -> dict[str, Any]:
        """The facts a report compares across nodes (evidence ``context.facts``)."""
        from rdmacheck.preflight.judge import facts_summary

        return facts_summary(self.facts)


def open_config(root: "str | HostRoot" = "/", env: str | None = None, profile: str | None = None,
                expect: list[str] | None = None) -> "tuple[HostRoot, Config]":
    """The root (``/``, a snapshot folder or a snapshot file) and the configuration read against it
    (the .env, then the root's own process environment winning, as compose does; the profile)."""
    from rdmacheck.config import load_config
    from rdmacheck.preflight.root import HostRoot, open_root

    r = root if isinstance(root, HostRoot) else open_root(str(root or "/"))
    # a snapshot's own .env values sit apart from its process environment: a --env given now replaces them
    return r, load_config(env, profile, expect, r.environ(), r.recorded_dotenv())


def run(root: "str | HostRoot" = "/", *, config: "Config | None" = None, env: str | None = None,
        profile: str | None = None, expect: list[str] | None = None, only: set[str] | None = None,
        facts_file: str | None = None) -> Run:
    """Gather (or read the recorded facts of ``facts_file``) and judge.

    ``config`` judges under a configuration already read (the cluster driver's, watch's, launch's);
    else ``env``/``profile``/``expect`` are read here.  ``only`` filters the results, never the facts.
    """
    from rdmacheck.preflight.gather import gather
    from rdmacheck.preflight.judge import judge, rejudge_from_evidence

    if facts_file:
        facts, cfg = rejudge_from_evidence(facts_file, env, profile, expect)
        return Run(facts, cfg, judge(facts, cfg, only, replay=True), None)
    if config is None:
        r, cfg = open_config(root, env, profile, expect)
    else:
        from rdmacheck.preflight.root import HostRoot, open_root

        r, cfg = (root if isinstance(root, HostRoot) else open_root(str(root or "/"))), config
    refuse_incomplete(r, root if isinstance(root, str) else str(r.root))
    facts = gather(r, cfg)
    return Run(facts, cfg, judge(facts, cfg, only), r)


def refuse_incomplete(r: "HostRoot", label: str) -> None:
    """A snapshot whose copy deadline passed holds only part of the host: judged, it would read as a broken host
    (missing devices, files and links).  Refused with the fix (issue 26 E10)."""
    from rdmacheck.util.errors import UsageError

    meta = None if r.live else r.meta("host.json")
    if isinstance(meta, dict) and meta.get("complete") is False:
        n = meta.get("uncopied")
        left = f"{n} paths" if isinstance(n, int) and not isinstance(n, bool) else "paths"
        raise UsageError(f"--root {label}: an incomplete snapshot (taken {meta.get('taken') or 'at an unknown time'}, "
                         f"its copy deadline passed with {left} not copied): it would replay as a broken host; take "
                         "it again with a longer deadline (rdmacheck snapshot --timeout 120 -o FILE)")
