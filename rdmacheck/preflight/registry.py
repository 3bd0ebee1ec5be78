"""The one list of preflight's node gates, in the order they run and print.

Each entry says everything about a gate that is not its judgement: the result ids it gives, the function
that judges (``module:function`` under ``rdmacheck.preflight.checks``, imported when first judged, as
pip's ``commands_dict`` imports a command), which of its results need the live host (a network answer at
that moment, a bind test: on a replay they are judged from the recorded probe answer and say so), what it
needs to judge anything (documentation: the gate itself skips with its reason when that is absent) and the
section of the docs that explains it.  ``--only`` is validated against it, the docs table is checked
against it (tests/test_layers.py), and no other module lists gate ids.

A new node gate on an existing fact: one function in ``checks/`` and one entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Mapping

from rdmacheck.util.errors import UsageError

CHECKS = "rdmacheck.preflight.checks"
LIVE_ONLY_NOTE = "live-only: judged from the recorded probe answer"


@dataclasses.dataclass(frozen=True)
class GateInfo:
    ids: tuple[str, ...]                  # result ids, the first is the gate's name
    target: str                           # "module:function" under rdmacheck.preflight.checks
    doc: str                              # where the docs explain it
    needs: tuple[str, ...] = ()           # what it needs to judge: rdma, gpu, pci, peer, dcb (else it skips)
    live_only: Mapping[str, str] = dataclasses.field(default_factory=dict)  # result id -> the live answer

    @property
    def name(self) -> str:
        return self.ids[0]

    def load(self) -> Callable:
        mod, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(f"{CHECKS}.{mod}"), fn)


_CORE = "docs/checks.md"
_GPU_NET = "docs/checks-gpu-net.md"
_DATAPATH = "docs/datapath.md"

GATES: tuple[GateInfo, ...] = (
    GateInfo(("rdma.devices",), "rdma:gate_devices", _CORE, needs=("rdma",)),
    GateInfo(("rdma.port",), "rdma:gate_port", _CORE, needs=("rdma",)),
    GateInfo(("rdma.netdev",), "rdma:gate_netdev", _CORE, needs=("rdma",)),
    GateInfo(("rdma.gid",), "rdma:gate_gid", _CORE, needs=("rdma",)),
    GateInfo(("rdma.mtu",), "rdma:gate_mtu", _CORE, needs=("rdma",)),
    GateInfo(("rdma.qos",), "rdma:gate_qos", _CORE),
    GateInfo(("rdma.devfiles",), "rdma:gate_devfiles", _CORE, needs=("rdma",)),
    GateInfo(("limits.memlock",), "limits:gate_memlock", _CORE),
    GateInfo(("limits.stack",), "limits:gate_stack", _CORE),
    GateInfo(("limits.shm",), "limits:gate_shm", _CORE),
    GateInfo(("rdma.pfc",), "pfc:gate_rdma_pfc", _GPU_NET, needs=("rdma", "dcb")),
    GateInfo(("nccl.env",), "nccl_env:gate_nccl_env", _GPU_NET,
             live_only={"nccl.env": "the MASTER_PORT bind test on the head"}),
    GateInfo(("net.peer",), "peer:gate_net_peer", _GPU_NET, needs=("peer",),
             live_only={"net.peer": "DNS, route, TCP and do-not-fragment ping answers"}),
    GateInfo(("gpu.nvml", "gpu.pcie", "gpu.ecc"), "gpu:gate_gpu_nvml", _GPU_NET, needs=("gpu",)),
    GateInfo(("gpu.memory",), "gpu:gate_gpu_memory", _GPU_NET, needs=("gpu",)),
    GateInfo(("gpu.gdr",), "gpu:gate_gpu_gdr", _GPU_NET, needs=("gpu",)),
    GateInfo(("gpu.clocks", "gpu.remap", "gpu.pcie_errors"), "gpu_health:gate_gpu_health", _GPU_NET, needs=("gpu",)),
    GateInfo(("gpu.xid",), "gpu_health:gate_gpu_xid", _GPU_NET, needs=("gpu",)),
    GateInfo(("nic.pcie", "nic.port_errors"), "nic_health:gate_nic_health", _GPU_NET, needs=("rdma",)),
    GateInfo(("pci.acs",), "pci:gate_pci_acs", _GPU_NET, needs=("gpu", "rdma", "pci")),
    GateInfo(("rdma.datapath",), "datapath:gate_datapath", _DATAPATH, needs=("rdma", "pyverbs"),
             live_only={"rdma.datapath": "RDMA WRITE/READ through each selected port on the live device"}),
    GateInfo(("net.arp",), "netpath:gate_arp", _DATAPATH, needs=("rdma",)),
    GateInfo(("net.firewall",), "netpath:gate_firewall", _DATAPATH, needs=("rdma", "root")),
    GateInfo(("net.dad",), "netpath:gate_dad", _DATAPATH, needs=("rdma", "root"),
             live_only={"net.dad": "ARP probes for this node's addresses on the mesh netdev"}),
)


def gate_ids() -> list[str]:
    """Every result id, in registry order (for --only and docs)."""
    return [i for g in GATES for i in g.ids]


def ids_of(name: str) -> tuple[str, ...]:
    """The result ids of the gate called ``name`` (its first id)."""
    return next(g.ids for g in GATES if g.name == name)


def live_only() -> dict[str, str]:
    """Result id -> the live answer it is judged from (the gates a replay can only re-read)."""
    return {k: v for g in GATES for k, v in g.live_only.items()}


def parse_only(text: str | None, flag: str = "--only") -> set[str] | None:
    """``--only a,b`` -> {a, b}, each a known result id; None when not given."""
    if not text:
        return None
    only = {s.strip() for s in str(text).split(",") if s.strip()}
    known = gate_ids()
    unknown = sorted(only - set(known))
    if unknown:
        raise UsageError(f"{flag}: unknown gate id(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return only or None
