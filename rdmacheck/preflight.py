"""The preflight pipeline: context (root + config + memoised facts) -> gates -> results.

Gates are plain functions ``gate(ctx) -> list[Result]`` listed in ``GATES``;
each reads facts through the context (which reads the host through one
``HostRoot``) and judges them against ``ctx.config``.  A gate that raises is
turned into a failing result naming the exception, so one broken probe can
never hide the others or print a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from typing import Any, Callable

from . import __version__
from .config import Config, load_config
from .errors import UsageError
from .model import Evidence, Result, Status
from .root import HostRoot


@dataclasses.dataclass
class PreflightContext:
    root: HostRoot
    config: Config
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fact(self, name: str, reader: Callable[[], Any]) -> Any:
        """Memoise one fact per run: several gates read the same sysfs class."""
        if name not in self.cache:
            self.cache[name] = reader()
        return self.cache[name]

    # -- the facts the core gates share ---------------------------------
    @property
    def ib(self):
        from .facts.infiniband import read_infiniband

        return self.fact("infiniband", lambda: read_infiniband(self.root))

    @property
    def net(self):
        from .facts.net import read_net

        return self.fact("net", lambda: read_net(self.root))

    @property
    def limits(self):
        from .facts.limits import read_limits

        return self.fact("limits", lambda: read_limits(self.root))

    @property
    def devfiles(self):
        from .facts.devfiles import read_devfiles

        return self.fact("devfiles", lambda: read_devfiles(self.root))

    @property
    def verbs(self):
        from .facts.verbs import read_verbs

        return self.fact("verbs", lambda: read_verbs(self.root, sorted(self.ib)))

    @property
    def selection(self):
        from .checks.rdma import select_ports

        return self.fact("selection", lambda: select_ports(self))


def _gates() -> list[Callable[[PreflightContext], list[Result]]]:
    from .checks import limits, rdma

    gates = [
        rdma.gate_devices,
        rdma.gate_port,
        rdma.gate_netdev,
        rdma.gate_gid,
        rdma.gate_mtu,
        rdma.gate_qos,
        rdma.gate_devfiles,
        limits.gate_memlock,
        limits.gate_stack,
        limits.gate_shm,
    ]
    # Gates from the second half of preflight (GPU, GDR, PCI, NCCL env, peer, PFC)
    # register themselves in EXTRA_GATES below.
    return gates + [g for g in (_resolve(n) for n in EXTRA_GATES) if g]


# "module:function" names of further gates, imported lazily (NVML, DNS ...).
EXTRA_GATES: list[str] = [
    "checks.pfc:gate_rdma_pfc",
    "checks.nccl_env:gate_nccl_env",
    "checks.peer:gate_net_peer",
    "checks.gpu:gate_gpu_nvml",
    "checks.gpu:gate_gpu_memory",
    "checks.gpu:gate_gpu_gdr",
    "checks.pci:gate_pci_acs",
]


def _resolve(name: str):
    import importlib

    mod, _, fn = name.partition(":")
    return getattr(importlib.import_module(f".{mod}", __package__), fn)


def gate_ids() -> list[str]:
    """Stable ids of all gates (for --only validation and docs)."""
    from .checks import GATE_IDS

    return list(GATE_IDS)


def run_preflight(ctx: PreflightContext, only: set[str] | None = None) -> list[Result]:
    results: list[Result] = []
    for gate in _gates():
        ids = getattr(gate, "gate_ids", None)
        if only and ids and not (set(ids) & only):
            continue
        try:
            out = gate(ctx)
        except UsageError:
            raise
        except Exception as e:  # a broken probe fails its gate; it never hides the others
            gid = (ids or [getattr(gate, "__name__", "gate")])[0]
            out = [Result(gid, Status.FAIL, observed=f"probe error: {type(e).__name__}: {e}",
                          remedy="this is a bug in rdmacheck or an unexpected host state; report it with `rdmacheck snapshot`")]
        results.extend(r for r in out if not only or r.id in only)
    return results


def collect_facts(ctx: PreflightContext) -> dict[str, Any]:
    """The facts a report compares across nodes (MTUs, active MTU, GIDs, firmware ...)."""
    from .checks.rdma import _fw

    sel = ctx.selection
    ports = []
    for p in sel.ports:
        nd = ctx.net.get(p.netdevs[0]) if p.netdevs else None
        ports.append({
            "port": p.name,
            "link_layer": p.link_layer,
            "state": p.state,
            "rate": p.rate,
            "fw_ver": _fw(ctx, p.device),
            "netdev": p.netdevs[0] if p.netdevs else None,
            "netdev_mtu": nd.mtu if nd else None,
            "active_mtu": sel.active_mtu.get(p.name, (None, None))[0],
            "active_mtu_source": sel.active_mtu.get(p.name, (None, None))[1],
            "gid_index": sel.gid_index.get(p.name),
            "gid": sel.gid_info.get(p.name),
        })
    from .facts.nccl_lib import read_nccl

    nvml = ctx.cache.get("nvml") if isinstance(ctx.cache.get("nvml"), dict) else {}
    nccl = ctx.fact("nccl_lib", lambda: read_nccl(ctx.root))
    return {
        # flat keys the cross-node report compares first
        "nccl_version": nccl.get("version"),
        "driver_version": nvml.get("driver_version"),
        "cuda_version": nvml.get("cuda_driver_version"),
        "kernel": ctx.root.read("/proc/sys/kernel/osrelease") or (platform.release() if ctx.root.live else None),
        "rdma_devices": sorted(ctx.ib),
        "ports": ports,
        "netdevs": {n: d.to_dict() for n, d in ctx.net.items() if n != "lo"},
        "verbs": {"available": ctx.verbs.get("available"), "error": ctx.verbs.get("error")},
        **ctx.cache.get("extra_facts", {}),
    }


def preflight_evidence(ctx: PreflightContext, results: list[Result]) -> Evidence:
    ev = Evidence(kind="preflight", results=results)
    meta_host = ctx.root.meta("host.json")
    if isinstance(meta_host, dict) and meta_host.get("host"):
        ev.host = str(meta_host["host"])
    ev.context = {
        "root": str(ctx.root.root),
        "config": ctx.config.to_dict(),
        "facts": collect_facts(ctx),
        "python": platform.python_version(),
        "rdmacheck": __version__,
    }
    return ev


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
    g.add_argument("--root", metavar="DIR", default="/",
                   help="read /sys, /proc, /dev, /etc under DIR instead of / (an unpacked `rdmacheck snapshot`)")


def context_from_args(args: argparse.Namespace) -> PreflightContext:
    import os

    root_dir = getattr(args, "root", "/") or "/"
    if not os.path.isdir(root_dir):
        raise UsageError(f"--root {root_dir}: not a folder; unpack the snapshot first (tar xzf FILE -C DIR)")
    root = HostRoot(root_dir)
    cfg = load_config(getattr(args, "env", None), getattr(args, "profile", None),
                      getattr(args, "expect", None), root.environ())
    return PreflightContext(root=root, config=cfg)
