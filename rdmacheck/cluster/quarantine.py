"""Quarantine: the nodes ``rdmacheck cluster --isolate`` found bad, with the reason and time.

Where it lives: a recorded list, ``reports/quarantine.json`` by default
(``--quarantine-file``), one entry per node label::

    {"schema": 1, "label": "rdmacheck=quarantined",
     "nodes": {"spark-03": {"reason": "...", "kind": "bad" | "straggler", "time": "2026-12-01T19:40:00Z",
                            "node_id": "...", "hostname": "...", "ip": "...", "evidence": "reports/cluster-.../cluster.json"}}}

Why a file and not a Ray node label: Ray (2.60 here) sets a node's labels
only when the node starts (``ray start --labels``, ``Cluster.add_node(labels=)``);
its GCS has no call that changes the labels of a running node (the services
in ``ray.core.generated.gcs_service_pb2`` offer DrainNode but no label update;
ray-project/ray PR #64986 proposes ``UpdateNodeLabels``).  ``ray_labels_support``
says so at run time, and the run records it.  An operator who restarts a
quarantined node's raylet with ``--labels rdmacheck=quarantined`` makes the
label real for label selectors.

Who consults it: ``rdmacheck cluster`` leaves quarantined nodes out of the
next isolation (named as quarantined in its report) unless
``--include-quarantined``; a quarantined node that passes a new isolation is
released from the list.  Releasing by hand: delete its entry.

Pure except ``load``/``save`` (one JSON file, written atomically).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rdmacheck.util.atomic import atomic_write
from rdmacheck.util.errors import UsageError

LABEL_KEY, LABEL_VALUE = "rdmacheck", "quarantined"
DEFAULT_FILE = Path("reports") / "quarantine.json"
SCHEMA = 1


def load(path: Path) -> dict[str, dict[str, Any]]:
    """label -> entry; a missing file is an empty list; a damaged one is a usage error naming it."""
    from rdmacheck.util.inputs import QUARANTINE_MAX, read_input_text

    if not os.path.lexists(path):
        return {}
    text = read_input_text(path, "--quarantine-file", QUARANTINE_MAX)
    try:
        data = json.loads(text)
        nodes = data["nodes"]
        if not isinstance(nodes, dict) or not all(isinstance(v, dict) for v in nodes.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"--quarantine-file {path}: not a quarantine list written by rdmacheck "
                         "(fix or remove the file)") from None
    return {str(k): v for k, v in nodes.items()}


def merge(current: dict[str, dict[str, Any]], add: dict[str, dict[str, Any]],
          release: set[str]) -> dict[str, dict[str, Any]]:
    """The list after one run: ``add`` entries in (newest wins), ``release`` labels out."""
    out = {k: v for k, v in current.items() if k not in release}
    out.update(add)
    return dict(sorted(out.items()))


def save(path: Path, nodes: dict[str, dict[str, Any]]) -> None:
    doc = {"schema": SCHEMA, "label": f"{LABEL_KEY}={LABEL_VALUE}", "nodes": nodes}
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def entry(node: Any, reason: str, kind: str, when: str, evidence: str) -> dict[str, Any]:
    return {"reason": reason, "kind": kind, "time": when, "node_id": node.node_id, "hostname": node.hostname,
            "ip": node.ip, "evidence": evidence, "label": f"{LABEL_KEY}={LABEL_VALUE}"}


def ray_labels_support(ray: Any) -> tuple[bool, str]:
    """Can this Ray change the labels of a running node?  (False, why) on every version seen so far."""
    version = getattr(ray, "__version__", "?")
    try:
        from ray.core.generated import gcs_service_pb2
    except Exception:  # pragma: no cover - a Ray without its generated protos
        return False, f"Ray {version}: no GCS service description to look for a label update"
    names = {m.name for s in gcs_service_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}
    if "UpdateNodeLabels" in names:
        return False, (f"Ray {version} has an UpdateNodeLabels GCS call, which this rdmacheck does not use yet; "
                       "quarantine is recorded in the list")
    return False, (f"Ray {version} sets node labels only at node start (ray start --labels); no call changes a "
                   "running node's labels, so quarantine is recorded in the list")
