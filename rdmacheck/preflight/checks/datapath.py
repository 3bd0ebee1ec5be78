"""rdma.datapath: real RDMA bytes moved through each selected port with NCCL's GID, TC, SL and MTU."""

from __future__ import annotations

from rdmacheck.evidence.model import Result, Status
from rdmacheck.util.units import human_bytes

EXPECTED = "each selected port writes, reads back and verifies RDMA data through NCCL's GID, TC, SL and MTU"


def _remedy(port, ans: dict) -> str:
    f = ans.get("failure") or {}
    stage, node, errno = ans.get("stage"), f.get("node"), f.get("errno_name")
    if stage == "open":
        if errno in ("EACCES", "EPERM"):
            return (f"let the job's user open {node or '/dev/infiniband/uverbsN'}: the rdma group or a udev rule "
                    "(MODE=\"0666\"); in a container pass it (--device=/dev/infiniband, compose devices: "
                    "[/dev/infiniband]) and allow it in the device cgroup")
        if errno == "ENOENT":
            return "the uverbs node is missing: modprobe ib_uverbs; in a container pass --device=/dev/infiniband"
        return f"the device {port.device} does not open for verbs: check `ibv_devinfo -d {port.device}` as this user"
    if stage == "mr":
        mem = ans.get("memlock") or {}
        return (f"raise memlock (now soft {human_bytes(mem.get('soft'))}): `ulimits: memlock: -1` in compose, "
                "LimitMEMLOCK=infinity, `* - memlock unlimited` (see limits.memlock)")
    if stage == "config":
        return "fix NCCL_IB_TC / NCCL_IB_SL / NCCL_IB_TIMEOUT / NCCL_IB_RETRY_CNT (see rdma.qos)"
    if stage == "connect":
        return ("NCCL's QP setup fails on this port: check the GID NCCL picks (rdma.gid), NCCL_IB_TC/NCCL_IB_SL "
                "(rdma.qos) and the port's state (rdma.port)")
    if stage == "verify":
        return "the NIC delivered corrupted data: reseat or replace it, check its firmware, drain the node"
    return (f"RoCE traffic through {port.name}'s own GID does not come back: check the port (rdma.port), its netdev "
            "MTU (rdma.mtu), a packet filter dropping UDP 4791 (net.firewall) and the NIC's counters "
            "(rdmacheck counters)")


def gate_datapath(facts, config) -> list[Result]:
    sel = facts.selection
    if not sel or not sel.ports:
        return [Result("rdma.datapath", Status.SKIP, observed="no port selected", expected=EXPECTED,
                       remedy="see rdma.devices")]
    parts, fails, skips, details = [], [], [], {}
    for p in sel.ports:
        ans = facts.answer("datapath", p.name)
        if not isinstance(ans, dict):
            skips.append(p.name)
            parts.append(f"{p.name}: not probed (a snapshot or record without the data-path probe)")
            continue
        want = sel.gid_index.get(p.name)
        used = (ans.get("params") or {}).get("gid_index")
        details[p.name] = {k: ans.get(k) for k in ("ok", "stage", "error", "bytes", "elapsed_ms", "path_mtu", "params")}
        if ans.get("available") is False:
            skips.append(p.name)
            parts.append(f"{p.name}: not probed: {ans.get('error')}")
        elif used is not None and want is not None and used != want:
            skips.append(p.name)
            parts.append(f"{p.name}: probed through GID {used}, this configuration picks GID {want}: not judged")
        elif ans.get("ok"):
            prm = ans.get("params") or {}
            parts.append(f"{p.name}: {human_bytes(ans.get('bytes'))} written, read back and verified through GID "
                         f"{prm.get('gid_index')} (TC {prm.get('traffic_class')}, SL {prm.get('service_level')}, "
                         f"MTU {ans.get('path_mtu')}) in {ans.get('elapsed_ms')} ms")
        else:
            parts.append(f"{p.name}: failed at {ans.get('stage')}: {ans.get('error')}")
            fails.append((p, ans))
    obs = "; ".join(parts)
    if fails:
        return [Result("rdma.datapath", Status.FAIL, observed=obs, expected=EXPECTED, details=details,
                       remedy="; ".join(dict.fromkeys(_remedy(p, a) for p, a in fails)))]
    if skips:
        return [Result("rdma.datapath", Status.SKIP, observed=obs, expected=EXPECTED, details=details,
                       remedy="run preflight on the live node with python3-pyverbs (rdma-core) installed")]
    return [Result("rdma.datapath", Status.PASS, observed=obs, expected=EXPECTED, details=details)]
