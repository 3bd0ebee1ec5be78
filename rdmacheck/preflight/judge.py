"""The preflight pipeline in two phases: gather (root + config -> NodeFacts), then judge.

Phase 1, ``gather.gather(root, config)``, reads and probes everything once
into a ``NodeFacts`` record.  Phase 2, ``judge(facts, config)``, runs the
gates: plain functions ``gate(facts, config) -> list[Result]`` listed in
``registry.GATES`` that read only the record and the configuration (no file, socket,
subprocess or clock).  A gate that raises is turned into a failing result
naming the exception, so one broken gate can never hide the others or print a
traceback.  ``--only`` filters the results; the facts are the same without it.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any, Callable

from rdmacheck import __version__
from rdmacheck.config import Config
from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Evidence, Result, Status
from rdmacheck.preflight.nodefacts import NodeFacts
from rdmacheck.preflight.registry import GATES, LIVE_ONLY_NOTE

Gate = Callable[[NodeFacts, Config], "list[Result]"]


def judge(facts: NodeFacts, config: Config, only: set[str] | None = None, replay: bool | None = None) -> list[Result]:
    """Phase 2: every gate on ``facts``; ``only`` filters the results printed.

    ``replay`` (default: the facts were not gathered live) marks the live-only gates'
    results as judged from recorded probe answers.
    """
    replay = (not facts.live) if replay is None else replay
    results: list[Result] = []
    for info in GATES:
        if only and not (set(info.ids) & only):
            continue
        try:
            out = info.load()(facts, config)
        except UsageError:
            raise
        except Exception as e:  # a broken gate fails; it never hides the others
            out = [Result(info.name, Status.FAIL, observed=f"probe error: {type(e).__name__}: {e}",
                          remedy="this is a bug in rdmacheck or an unexpected host state; report it with `rdmacheck snapshot`")]
        for r in out:
            if replay and r.id in info.live_only:
                r.details["live_only"] = info.live_only[r.id]
                # a skip judged nothing (no recorded answer, or one that could not be judged): no such claim
                if r.status is not Status.SKIP and "live-only" not in r.observed:
                    r.observed = f"{r.observed} ({LIVE_ONLY_NOTE})"
        results.extend(r for r in out if not only or r.id in only)
    return results


def facts_summary(facts: NodeFacts) -> dict[str, Any]:
    """The facts a report compares across nodes (MTUs, active MTU, GIDs, firmware ...)."""
    from rdmacheck.preflight.checks.rdma import _fw

    sel = facts.selection
    ports = []
    for p in sel.ports if sel else []:
        nd = facts.net.get(p.netdevs[0]) if p.netdevs else None
        ports.append({
            "port": p.name,
            "link_layer": p.link_layer,
            "state": p.state,
            "rate": p.rate,
            "fw_ver": _fw(facts, p.device),
            "netdev": p.netdevs[0] if p.netdevs else None,
            "netdev_mtu": nd.mtu if nd else None,
            "active_mtu": sel.active_mtu.get(p.name, (None, None))[0],
            "active_mtu_source": sel.active_mtu.get(p.name, (None, None))[1],
            "gid_index": sel.gid_index.get(p.name),
            "gid": sel.gid_info.get(p.name),
        })
    nvml = facts.nvml if isinstance(facts.nvml, dict) else {}
    return {
        # flat keys the cross-node report compares first
        "nccl_version": facts.nccl_lib.get("version"),
        "driver_version": nvml.get("driver_version"),
        "cuda_version": nvml.get("cuda_driver_version"),
        "kernel": facts.kernel,
        "rdma_devices": sorted(facts.ib),
        "ports": ports,
        "netdevs": {n: d.to_dict() for n, d in facts.net.items() if n != "lo"},
        "verbs": {"available": facts.verbs.get("available"), "error": facts.verbs.get("error")},
        "bootstrap": facts.bootstrap,
    }


# A replayed tree that recorded no host name (a sysfs capture): never this machine's name (issue 26 E3)
NO_HOST = "(no host name recorded)"


def host_of(facts: NodeFacts) -> str:
    """The host the facts describe: its recorded name, this machine's when live, else NO_HOST."""
    import socket

    return facts.host or (socket.gethostname() if facts.live else NO_HOST)


def evidence_for(facts: NodeFacts, config: Config, results: list[Result]) -> Evidence:
    """Preflight evidence: results, the config they were judged under, and the full NodeFacts record."""
    ev = Evidence(kind="preflight", results=results)
    ev.host = host_of(facts)
    ev.context = {
        "root": facts.root,
        "node_id": facts.node_id,   # the report keeps two nodes of one host name apart by it
        "config": config.to_dict(),
        "facts": facts_summary(facts),
        # the whole record, versioned inside (NodeFacts.version): `preflight --facts` re-judges it
        "node_facts": facts.to_dict(),
        "python": platform.python_version(),
        "rdmacheck": __version__,
    }
    return ev


def rejudge_from_evidence(path: str, env_file: str | None = None, profile_file: str | None = None,
                          expect: list[str] | None = None) -> tuple[NodeFacts, Config]:
    """The NodeFacts of a preflight evidence file and the config to judge them under.

    The recorded config is the base; ``env_file`` replaces its .env (the values the node's
    process environment set still win, as compose would there), ``profile_file`` its profile,
    ``expect`` overrides single values.  The derived facts are computed again under it.
    """
    from rdmacheck.config import build_profile, load_env_file, load_profile
    from rdmacheck.preflight.gather import derive
    from rdmacheck.evidence.jsonout import read_evidence

    ev = read_evidence(path)
    if ev.kind != "preflight":
        raise UsageError(f"--facts {path}: a {ev.kind!r} evidence file; pass preflight evidence "
                         "(rdmacheck preflight --json FILE)")
    raw = ev.context.get("node_facts")
    if raw is None:
        raise UsageError(f"--facts {path}: no facts record (context.node_facts): the file was written before "
                         "rdmacheck recorded them; run `rdmacheck preflight --json FILE` on the node again, "
                         "or replay its snapshot with --root FILE.tar.gz")
    try:
        facts = NodeFacts.from_dict(raw)
    except ValueError as e:
        raise UsageError(f"--facts {path}: {e}; write the evidence again with this rdmacheck") from None
    rec = ev.context.get("config") if isinstance(ev.context.get("config"), dict) else {}
    env = {str(k): str(v) for k, v in (rec.get("env") or {}).items()}
    sources = {str(k): str(v) for k, v in (rec.get("env_sources") or {}).items()}
    used = rec.get("env_file")
    if env_file:
        node_env = {k: env[k] for k, src in sources.items() if src == "process" and k in env}
        env = {**load_env_file(env_file), **node_env}
        sources = {**{k: "env-file" for k in env}, **{k: "process" for k in node_env}}
        used = str(env_file)
    if profile_file:
        profile = load_profile(profile_file, expect)
    else:
        try:
            profile = build_profile(rec.get("profile") or {}, expect)
        except UsageError as e:
            if expect and str(e).startswith("--expect"):
                raise
            raise UsageError(f"--facts {path}: recorded profile unreadable ({e}); pass --profile FILE") from None
    config = Config(env=env, env_sources=sources, env_file=used, profile=profile)
    derive(facts, config)
    return facts, config


# ---------------------------------------------------------------- CLI glue

def add_config_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--env", metavar="FILE",
                   help="the .env compose uses (default: docker/.env when it exists). "
                        "Variables set in the environment win, as with docker compose.")
    g.add_argument("--profile", metavar="FILE|NAME",
                   help="TOML profile of expectations (MTU, subnet, memlock, GPUs per node, min busbw), or a "
                        "built-in one: 'reference' (the default) or 'dgx-spark' (docs/profile.md)")
    g.add_argument("--expect", metavar="KEY=VALUE", action="append", default=[],
                   help="override one profile value, e.g. --expect mtu=1500 --expect subnet=10.0.0.0/24 (repeatable)")
    g.add_argument("--root", metavar="DIR|FILE.tar.gz", default="/",
                   help="read /sys, /proc, /dev, /etc under DIR instead of / (an unpacked `rdmacheck snapshot`), "
                        "or the snapshot FILE.tar.gz itself (unpacked safely to a temporary folder)")
