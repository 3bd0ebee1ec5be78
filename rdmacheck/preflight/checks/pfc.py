"""rdma.pfc: the lossless-RoCE chain NCCL_IB_TC -> DSCP -> priority -> PFC.

NCCL puts NCCL_IB_TC in the GRH traffic class of every RoCE v2 packet; the
IP header's DSCP is its upper six bits (TC >> 2; the low two are ECN).  A NIC
trusting DSCP maps it to a priority through its DCB app table (dscp-prio), and
that priority must have PFC enabled, or congestion drops packets and NCCL
stalls in retransmit timeouts (``NCCL_IB_TIMEOUT``) instead of pausing.
"""

from __future__ import annotations

from typing import Any

from rdmacheck.preflight.facts import dcb
from rdmacheck.evidence.model import Result, Status
from rdmacheck.preflight.checks.peer import combine, step, subnet_interfaces
from rdmacheck.nccl.spec import nccl_param_int


def _tc(config) -> tuple[int | None, str]:
    raw = config.get("NCCL_IB_TC")
    if raw is None:
        return 0, "NCCL_IB_TC unset (NCCL default 0)"
    try:
        v = nccl_param_int(raw)  # param.cc: strtoll base 0 (int(x, 0) read "010" and "1_0" otherwise)
    except ValueError:
        return None, f"NCCL_IB_TC={raw!r}"
    if v is None or v == -1:  # empty, beyond int64, or NCCL's own unset (NCCL_PARAM(IbTc, "IB_TC", -1))
        return 0, f"NCCL_IB_TC={raw} (NCCL's unset: default 0)"
    return (v, f"NCCL_IB_TC={raw}") if 0 <= v <= 255 else (None, f"NCCL_IB_TC={raw!r}")


def _facts(facts, dev: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recorded ``dcb -j app/pfc show`` answers for one netdev (gather probed them)."""
    d = facts.dcb(dev)
    if d is None:
        none = {"json": None, "error": "the snapshot holds no dcb facts for this interface",
                "unsupported": False, "missing": True}
        return none, none
    return d


def gate_rdma_pfc(facts, config) -> list[Result]:
    tc, tc_txt = _tc(config)
    if tc is None:
        return [Result("rdma.pfc", Status.SKIP, observed=f"{tc_txt} is not a traffic class 0-255 (see rdma.qos)")]
    dscp = tc >> 2
    devs = dcb.rdma_netdevs(facts.port_netdevs, config.get("NCCL_IB_HCA"))
    if not devs:
        devs = {i: "?" for i in subnet_interfaces(facts, config)}
    if not devs:
        return [Result("rdma.pfc", Status.SKIP, observed="no RDMA netdev found to read DCB from")]
    expected = f"PFC on the priority DSCP {dscp} maps to"
    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    for nd, rdev in devs.items():
        app, pfc = _facts(facts, nd)
        if app.get("json") is None:
            reason = app.get("error") or "no answer"
            if app.get("unsupported"):
                skipped.append(f"{nd}: DCB not supported by this interface ({reason})")
            elif app.get("missing"):
                skipped.append(f"{nd}: {reason}")
            elif app.get("timeout"):  # no answer is not a wrong answer: the gate could not judge
                items.append(step(nd, Status.SKIP, f"{nd}: {reason}", "run it again when the node is less loaded "
                                  f"(dcb app show dev {nd})", unjudged=reason))
            else:
                items.append(step(nd, Status.FAIL, f"{nd}: dcb app show failed: {reason}",
                                  "check that iproute2's dcb works: dcb app show dev " + nd))
            continue
        table = dcb.parse_app(app["json"])
        prios = table["dscp_prio"].get(dscp, [])
        chain = f"{nd} ({rdev}): {tc_txt} -> DSCP {dscp}"
        note = ""
        if not prios:
            base = table["default_prio"][:1] or [0]
            prios = base
            note = (f" -> no dscp-prio rule for DSCP {dscp}" +
                    (" (the table is empty: the NIC trusts PCP, not DSCP)" if not table["dscp_prio"] else "") +
                    f"; assuming priority {base[0]}")
        elif len(prios) > 1:
            note = f" -> several priorities {prios} (ambiguous rules)"
        if pfc.get("json") is None:
            if pfc.get("timeout"):
                items.append(step(nd, Status.SKIP, f"{chain}{note}; dcb pfc show: {pfc.get('error')}",
                                  f"run it again when the node is less loaded (dcb pfc show dev {nd})",
                                  unjudged=str(pfc.get("error"))))
                continue
            items.append(step(nd, Status.FAIL if not pfc.get("unsupported") else Status.SKIP,
                              f"{chain}{note}; dcb pfc show: {pfc.get('error')}"))
            continue
        pf = dcb.parse_pfc(pfc["json"])
        on = [p for p in prios if pf["prio_pfc"][p] is True]
        off = [p for p in prios if pf["prio_pfc"][p] is not True]
        enabled = [i for i, v in enumerate(pf["prio_pfc"]) if v]
        obs = (f"{chain}{note or ' -> priority ' + str(prios[0])}; PFC on priorities "
               f"{enabled or 'none'}")
        extra = {"dscp": dscp, "priorities": prios, "pfc_enabled": enabled}
        if off:
            items.append(step(nd, Status.FAIL, obs,
                              f"enable PFC on priority {off[0]} (dcb pfc set dev {nd} prio-pfc {off[0]}:on, or "
                              f"mlnx_qos -i {nd} --pfc with that bit set) and on the switch ports, or set NCCL_IB_TC "
                              f"to a class whose DSCP maps to a PFC priority", **extra))
        elif note:
            items.append(step(nd, Status.WARN, obs,
                              f"map DSCP {dscp} explicitly: dcb app add dev {nd} dscp-prio {dscp}:{on[0]} "
                              f"(mlnx_qos -i {nd} --trust dscp)", **extra))
        else:
            items.append(step(nd, Status.PASS, obs, **extra))
    if not items:
        return [Result("rdma.pfc", Status.SKIP, observed="; ".join(skipped),
                       details={"skipped": skipped, "dscp": dscp})]
    res = combine("rdma.pfc", items, expected)
    res.details["skipped"] = skipped
    return [res]
