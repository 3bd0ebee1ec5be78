"""What the verbs library itself says (pyverbs), for facts sysfs lacks.

sysfs has no ``active_mtu`` for rxe and mlx5, so the RoCE active MTU is asked
of verbs (``ibv_query_port``), as ``ibv_devinfo`` does.

Quirks (seen with Debian's python3-pyverbs on kernel 6.1 rxe):

* pyverbs is not on PyPI: Debian ships it for /usr/bin/python3 in
  /usr/lib/python3/dist-packages.  Another CPython of the same minor version
  (pyenv, venv) can load it, so we add that folder to sys.path *only* for the
  import and take it out again, to keep Debian's other packages from
  shadowing the environment's.
* On a host with no RDMA device, ``get_device_list()`` raises
  ``PyverbsRDMAError: Failed to get devices list`` instead of returning [].
* The device attribute is ``fw_version`` (not ``fw_ver``); ``query_gid_type``
  uses the sysfs enum (1 = RoCE v2) while ``query_gid_table`` entries use the
  ibv enum (2 = RoCE v2).  We only use port attributes and fw_version.

Replaying a snapshot, the answers come from ``rdmacheck/verbs.json``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from rdmacheck.preflight.root import HostRoot

DEBIAN_DIST = "/usr/lib/python3/dist-packages"
# ibv_mtu enum -> bytes
IBV_MTU = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
IBV_LINK_LAYER = {0: "Unspecified", 1: "InfiniBand", 2: "Ethernet"}


def _import_pyverbs():
    try:
        return importlib.import_module("pyverbs.device"), None
    except ImportError as first:
        if sys.version_info[:2] != (3, 11) and not _debian_matches():
            return None, f"pyverbs not importable ({first})"
        added = DEBIAN_DIST not in sys.path
        if added:
            sys.path.append(DEBIAN_DIST)
        try:
            return importlib.import_module("pyverbs.device"), None
        except ImportError as e:
            return None, f"pyverbs not importable ({e}); install python3-pyverbs (rdma-core)"
        finally:
            if added and DEBIAN_DIST in sys.path:
                sys.path.remove(DEBIAN_DIST)


def _debian_matches() -> bool:
    import glob

    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
    return bool(glob.glob(f"{DEBIAN_DIST}/pyverbs/*{tag}*.so"))


def live_verbs(device_names: list[str]) -> dict[str, Any]:
    """{"available": bool, "error": str|None, "devices": {name: {fw_version, ports: {n: {...}}}}}."""
    if not device_names:
        return {"available": False, "error": "no RDMA devices", "devices": {}}
    mod, err = _import_pyverbs()
    if mod is None:
        return {"available": False, "error": err, "devices": {}}
    out: dict[str, Any] = {"available": True, "error": None, "devices": {}}
    for name in device_names:
        try:
            with mod.Context(name=name) as ctx:
                attr = ctx.query_device()
                dev: dict[str, Any] = {"fw_version": str(getattr(attr, "fw_version", "")), "ports": {}}
                for p in range(1, int(attr.phys_port_cnt) + 1):
                    pa = ctx.query_port(p)
                    dev["ports"][str(p)] = {
                        "state": int(pa.state),
                        "active_mtu": IBV_MTU.get(int(pa.active_mtu)),
                        "max_mtu": IBV_MTU.get(int(pa.max_mtu)),
                        "link_layer": IBV_LINK_LAYER.get(int(pa.link_layer), str(pa.link_layer)),
                        "gid_tbl_len": int(pa.gid_tbl_len),
                    }
                out["devices"][name] = dev
        except Exception as e:  # PyverbsRDMAError, PyverbsError: report, never raise
            out["devices"][name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def read_verbs(root: HostRoot, device_names: list[str]) -> dict[str, Any]:
    if root.live:
        return live_verbs(device_names)
    meta = root.meta("verbs.json")
    if isinstance(meta, dict):
        return meta
    return {"available": False, "error": "snapshot holds no verbs facts", "devices": {}}
