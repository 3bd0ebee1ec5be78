"""DCB facts through iproute2's ``dcb -j`` (app table and PFC), time-bounded.

JSON shapes, from iproute2's dcb/dcb_app.c and dcb/dcb_pfc.c (see
tests/data/dcb/SOURCE.md for the exact sources):

* ``dcb -j app show dev IF``: ``{"dscp_prio": [[24, 3], ...], "default_prio": [0], ...}``.
  Since iproute2 6.5 (commit 00d59f40 "dcb: app: move colon printing out of
  callbacks") every pair carries a third element, the separator string
  ``" "``: ``[[8, 0, " "], [16, 1, " "]]``; both shapes occur in the field.
  One DSCP may map to several priorities (the kernel keeps every rule).
  ``pcp_prio`` keys are strings such as ``"1nd"`` unless ``-N``.
* ``dcb -j pfc show dev IF``: ``{"pfc_cap": 8, "macsec_bypass": false,
  "delay": 4096, "prio_pfc": [false, ..., true]}`` (one bool per priority 0-7).

A device without DCB ops (veth, rxe's netdev, most virtual NICs) makes
``dcb`` exit 1 with ``Attribute read: Operation not supported``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

DCB_TIMEOUT_S = 3.0
IB_CLASS = "/sys/class/infiniband"


def run_dcb(obj: str, dev: str, timeout: float = DCB_TIMEOUT_S) -> dict[str, Any]:
    """{"json": dict|None, "error": str|None, "unsupported": bool} for ``dcb -j OBJ show dev DEV``."""
    if not shutil.which("dcb"):
        return {"json": None, "error": "dcb (iproute2) not installed", "unsupported": False, "missing": True}
    cmd = ["dcb", "-j", obj, "show", "dev", dev]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"json": None, "error": f"{' '.join(cmd)} did not answer within {timeout:g} s", "unsupported": False,
                "timeout": True}
    except OSError as e:
        return {"json": None, "error": str(e), "unsupported": False}
    err = (p.stderr or "").strip()
    if p.returncode != 0:
        unsupported = "not supported" in err.lower()
        return {"json": None, "error": err or f"dcb exited {p.returncode}", "unsupported": unsupported}
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else {}
    except ValueError:
        return {"json": None, "error": f"unparsable dcb output: {p.stdout[:80]!r}", "unsupported": False}
    if not isinstance(data, dict):
        return {"json": None, "error": f"unexpected dcb JSON: {p.stdout[:80]!r}", "unsupported": False}
    return {"json": data, "error": None, "unsupported": False}


def _ints(pair: Any) -> list[int]:
    if not isinstance(pair, list):
        return []
    return [v for v in pair if isinstance(v, int) and not isinstance(v, bool)]


def parse_app(data: Any) -> dict[str, Any]:
    """App table JSON -> {"dscp_prio": {dscp: [prio, ...]}, "default_prio": [..]}; tolerant of both shapes."""
    out: dict[str, Any] = {"dscp_prio": {}, "default_prio": []}
    if not isinstance(data, dict):
        return out
    pairs = data.get("dscp_prio")
    for pair in pairs if isinstance(pairs, list) else []:
        v = _ints(pair)
        if len(v) >= 2 and 0 <= v[0] <= 63 and 0 <= v[1] <= 7:
            out["dscp_prio"].setdefault(v[0], [])
            if v[1] not in out["dscp_prio"][v[0]]:
                out["dscp_prio"][v[0]].append(v[1])
    dp = data.get("default_prio")
    if isinstance(dp, list):
        out["default_prio"] = [p for p in dp if isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 7]
    return out


def _flag(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("on", "off", "true", "false"):
        return v.lower() in ("on", "true")
    return None


def parse_pfc(data: Any) -> dict[str, Any]:
    """PFC JSON -> {"prio_pfc": [bool|None]*8, "pfc_cap": int|None, "delay": int|None}."""
    out: dict[str, Any] = {"prio_pfc": [None] * 8, "pfc_cap": None, "delay": None}
    if not isinstance(data, dict):
        return out
    arr = data.get("prio_pfc")
    if isinstance(arr, list):
        for i, v in enumerate(arr[:8]):
            out["prio_pfc"][i] = _flag(v)
    for k in ("pfc_cap", "delay"):
        v = data.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            out[k] = v
    return out


def rdma_netdevs(port_netdevs: dict[str, list[str]], hca_spec: str | None) -> dict[str, str]:
    """{netdev: rdma device} for the RDMA ports NCCL_IB_HCA selects (all when unset).

    ``port_netdevs`` is ``facts.infiniband.port_netdevs()``: the per-port map, so a
    two-port HCA gives each port's own netdev (no port-1 assumption).
    """
    from rdmacheck.util.errors import UsageError
    from rdmacheck.nccl.spec import parse_list_spec

    try:
        spec = parse_list_spec(hca_spec, "NCCL_IB_HCA", with_ports=True)
    except UsageError:
        return {}  # rdma.devices reports the malformed value
    out: dict[str, str] = {}
    for name, nds in port_netdevs.items():
        dev, _, port = name.rpartition(":")
        if not spec.matches(dev, int(port) if port.isdecimal() else None):
            continue
        for nd in nds:
            out.setdefault(nd, dev)
    return out
