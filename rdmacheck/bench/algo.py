"""``bench --algo ring|tree|auto``: which NCCL algorithm the sweep runs, and why.

On two nodes NCCL's own choice can report a bus bandwidth above the NIC's line
rate (nccl-tests #196, nccl #812): the Tree/NVLS/CollNet algorithms do not move
the bytes the ring busbw factor 2(n-1)/n assumes, so the number stops being a
statement about the network.  A *network* verdict therefore needs
``NCCL_ALGO=Ring``; on one node (NVLink, PCIe) nothing crosses the NIC and
NCCL's own pick is what the application will get, so ``auto`` stays.

Resolution, per rank, before the communicator is created (NCCL reads
NCCL_ALGO at init):

* ``--algo ring|tree`` sets ``NCCL_ALGO=Ring|Tree``; ``--algo auto`` removes
  NCCL_ALGO so NCCL chooses;
* no ``--algo`` and NCCL_ALGO already in the environment: kept as given;
* otherwise ``ring`` when the ranks span nodes (torchrun's WORLD_SIZE larger
  than LOCAL_WORLD_SIZE), ``auto`` when they share one node.

gloo ignores NCCL_ALGO; the choice is still recorded, marked as not applying.
"""

from __future__ import annotations

import os
from typing import Any, MutableMapping

CHOICES = ("ring", "tree", "auto")
_NCCL = {"ring": "Ring", "tree": "Tree"}


def resolve_algo(requested: str | None, world: int, local_world: int,
                 env: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """What NCCL_ALGO this rank runs with: ``{"algo", "nccl_algo", "source", "why"}`` (pure but for ``env``)."""
    env = os.environ if env is None else env
    spans = world > max(local_world, 1)
    if requested is None and env.get("NCCL_ALGO"):
        return {"algo": env["NCCL_ALGO"].lower(), "nccl_algo": env["NCCL_ALGO"], "source": "environment",
                "why": "NCCL_ALGO was set in the environment and --algo was not given"}
    if requested is None:
        algo = "ring" if spans else "auto"
        why = ("ranks span nodes: a network verdict needs the ring (NCCL's own pick can report busbw above "
               "line rate, nccl-tests #196, nccl #812)") if spans else "all ranks on one node: NCCL's own choice"
        source = "default"
    else:
        algo, why, source = requested, "--algo " + requested, "--algo"
    return {"algo": algo, "nccl_algo": _NCCL.get(algo), "source": source, "why": why}


def apply_algo(choice: dict[str, Any], backend: str, env: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """Set (or, for auto, remove) NCCL_ALGO in ``env``; returns the record for the evidence context."""
    env = os.environ if env is None else env
    if choice["source"] != "environment":
        if choice["nccl_algo"]:
            env["NCCL_ALGO"] = choice["nccl_algo"]
        else:
            env.pop("NCCL_ALGO", None)
    rec = dict(choice)
    if backend != "nccl":
        rec["applies"] = False
        rec["why"] += f"; {backend} ignores NCCL_ALGO"
    else:
        rec["applies"] = True
    return rec


def label(rec: dict[str, Any] | None) -> str:
    """For the table header: ``ring (NCCL_ALGO=Ring)``, ``auto``, ``ring (not used by gloo)``."""
    if not rec:
        return "auto"
    s = str(rec.get("algo"))
    if rec.get("applies") is False:
        return s + " (NCCL only)"
    return s + (f" (NCCL_ALGO={rec['nccl_algo']})" if rec.get("nccl_algo") else "")
