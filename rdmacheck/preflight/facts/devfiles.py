"""RDMA device files (/dev/infiniband) and their mapping to HCAs.

A container that lacks /dev/infiniband/uverbsN silently falls back to
NET/Socket in NCCL, so the files matter as much as the devices.

uverbsN -> HCA comes from /sys/class/infiniband_verbs/uverbsN/ibdev.  The RDMA
modules loaded (/proc/modules, or /sys/module for built-in ones) tell "load the
module" apart from "the module is loaded, the container was not given the file".
"""

from __future__ import annotations

import dataclasses

from rdmacheck.preflight.facts.kmod import loaded_modules
from rdmacheck.preflight.root import HostRoot


@dataclasses.dataclass
class DevFiles:
    present: list[str]                    # names under /dev/infiniband
    uverbs_to_ibdev: dict[str, str]       # uverbs0 -> roceP2p1s0f0
    etc_rdma: bool
    etc_rdma_entries: list[str]
    # of RDMA_MODULES, those loaded; None when neither /proc/modules nor /sys/module could be read
    modules: list[str] | None = None

    def uverbs_for(self, ibdev: str) -> list[str]:
        return [u for u, d in self.uverbs_to_ibdev.items() if d == ibdev]


# the modules behind /dev/infiniband: uverbsN (ib_uverbs) and rdma_cm (rdma_ucm)
RDMA_MODULES = ("ib_uverbs", "rdma_ucm")


def read_devfiles(root: HostRoot) -> DevFiles:
    present = root.listdir("/dev/infiniband")
    mapping = {}
    for u in root.listdir("/sys/class/infiniband_verbs"):
        if u.startswith("uverbs"):
            ib = root.read(f"/sys/class/infiniband_verbs/{u}/ibdev")
            if ib:
                mapping[u] = ib
    return DevFiles(
        present=present,
        uverbs_to_ibdev=mapping,
        etc_rdma=root.is_dir("/etc/rdma"),
        etc_rdma_entries=root.listdir("/etc/rdma"),
        modules=loaded_modules(root, RDMA_MODULES),
    )
