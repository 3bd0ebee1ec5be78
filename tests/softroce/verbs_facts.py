"""Print what pyverbs answers about every RDMA device, as JSON (run inside the soft-RoCE guest).

pyverbs ships as a Debian package (python3-pyverbs) in /usr/lib/python3/dist-packages,
which a pyenv/venv Python does not search: add it only when the plain import fails.
"""

from __future__ import annotations

import json
import sys


def _import():
    try:
        import pyverbs.device  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
    import pyverbs.device as d
    from pyverbs.device import Context
    return d, Context


def main() -> int:
    d, Context = _import()
    out: dict = {"python": sys.executable, "devices": {}}
    try:
        devs = d.get_device_list()
    except Exception as e:  # no RDMA at all raises instead of returning []
        out["error"] = f"{type(e).__name__}: {e}"
        devs = []
    for dev in devs:
        name = dev.name.decode()
        with Context(name=name) as ctx:
            attr = ctx.query_device()
            info = {"fw_version": attr.fw_version,  # pyverbs names it fw_version, not fw_ver
                    "phys_port_cnt": attr.phys_port_cnt, "ports": {}}
            for port in range(1, attr.phys_port_cnt + 1):
                p = ctx.query_port(port)
                row = {"state": p.state, "active_mtu": p.active_mtu, "max_mtu": p.max_mtu,
                       "link_layer": p.link_layer, "gid_tbl_len": p.gid_tbl_len,
                       "active_speed": p.active_speed, "active_width": p.active_width, "gids": []}
                for i in range(min(p.gid_tbl_len, 8)):
                    gid = str(ctx.query_gid(port, i))
                    try:
                        gtype = ctx.query_gid_type(port, i)
                    except Exception as e:
                        gtype = f"{type(e).__name__}"
                    row["gids"].append({"index": i, "gid": gid, "query_gid_type": gtype})
                try:
                    row["gid_table"] = [{"index": e.gid_index, "gid_type": e.gid_type, "ndev_ifindex": e.ndev_ifindex}
                                        for e in ctx.query_gid_table(16)]
                except Exception as e:
                    row["gid_table"] = f"{type(e).__name__}: {e}"
                info["ports"][str(port)] = row
            out["devices"][name] = info
    json.dump(out, sys.stdout, indent=1, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
