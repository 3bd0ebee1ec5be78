"""The host's packet filter rules, for the static cause of a dead RoCE v2 path: UDP port 4791 dropped.

RoCE v2 is UDP to port 4791.  A rule that drops it lets ping and TCP through while every RDMA transfer
stalls until the QP's retry counter runs out (seen on soft-RoCE: ib_write_bw hung, 14,061 packets
dropped, every configuration gate passing).  The rules are asked of the tools that own them, each bounded
in time: ``iptables-save`` (the legacy and the nft backend both print the iptables view) and
``nft -j list ruleset`` (native nftables, JSON).  Not root, or neither tool installed: the answer says so
and the gate cannot judge (never a pass).  A snapshot records the answer (probe ``firewall``).

:func:`udp4791_drops` reads both into the rules that drop or reject RoCE v2 traffic.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

ROCE_V2_PORT = 4791
# iptables-save on a node with tens of thousands of kube-proxy rules takes seconds, and so does its start in an
# emulated test guest under load (3 s timed out there): long enough for those, still a bound
TIMEOUT_S = 10.0
MAX_OUTPUT = 4 << 20


def _run(argv: list[str]) -> tuple[str | None, str | None]:
    exe = shutil.which(argv[0])
    if not exe:
        return None, f"{argv[0]} not installed"
    try:
        p = subprocess.run([exe, *argv[1:]], capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]} did not answer within {TIMEOUT_S:g} s"
    except OSError as e:
        return None, f"{argv[0]}: {e.strerror or e}"
    out = p.stdout[:MAX_OUTPUT].decode("utf-8", "replace")
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, f"{' '.join(argv)}: exit {p.returncode}: {err[0] if err else ''}".strip()
    return out, None


def read_rules() -> dict[str, Any]:
    """The live probe: {"iptables": text|None, "iptables_error", "nft": json|None, "nft_error"}."""
    ipt, ipt_err = _run(["iptables-save", "-t", "filter"])
    nft, nft_err = _run(["nft", "-j", "list", "ruleset"])
    nft_doc = None
    if nft is not None:
        try:
            nft_doc = json.loads(nft)
        except ValueError as e:
            nft_err = f"nft -j printed no JSON ({e})"
    out = {"iptables": ipt, "iptables_error": ipt_err, "nft": nft_doc, "nft_error": nft_err}
    if ipt is None and nft_doc is None:
        out["error"] = f"no packet filter view: {ipt_err}; {nft_err}"
    return out


# ------------------------------------------------------------------ reading the rules (pure)

def _port_hits(spec: str) -> bool:
    """Does an iptables port spec (``4791``, ``4000:5000``, ``53,4791``) include 4791?"""
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        try:
            a = int(lo) if lo else 0
            b = int(hi) if hi else (a if not _ else 65535)
        except ValueError:
            continue
        if a <= ROCE_V2_PORT <= b:
            return True
    return False


def _iptables_drops(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if not line.startswith("-A "):
            continue
        try:
            tok = shlex.split(line)
        except ValueError:
            continue
        chain = tok[1] if len(tok) > 1 else ""
        if chain not in ("INPUT", "OUTPUT"):
            continue
        target = tok[tok.index("-j") + 1] if "-j" in tok and tok.index("-j") + 1 < len(tok) else ""
        if target not in ("DROP", "REJECT"):
            continue
        if "!" in tok:  # a negated match: not a plain drop of RoCE (conservative)
            continue
        proto = tok[tok.index("-p") + 1] if "-p" in tok and tok.index("-p") + 1 < len(tok) else None
        if proto not in (None, "udp", "17", "all"):
            continue
        ports = [tok[i + 1] for i, t in enumerate(tok[:-1]) if t in ("--dport", "--destination-port", "--dports")]
        if ports and not any(_port_hits(p) for p in ports):
            continue
        out.append({"source": "iptables", "chain": chain, "rule": line, "target": target})
    return out


def _nft_port_hits(right: Any) -> bool:
    if isinstance(right, int):
        return right == ROCE_V2_PORT
    if isinstance(right, dict):
        if "range" in right and isinstance(right["range"], list) and len(right["range"]) == 2:
            a, b = right["range"]
            return isinstance(a, int) and isinstance(b, int) and a <= ROCE_V2_PORT <= b
        if "set" in right:
            return any(_nft_port_hits(x) for x in right["set"] or [])
    if isinstance(right, list):
        return any(_nft_port_hits(x) for x in right)
    return False


def _nft_drops(doc: Any) -> list[dict[str, Any]]:
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return []
    hooks = {}
    for it in items:
        c = it.get("chain") if isinstance(it, dict) else None
        if isinstance(c, dict) and c.get("hook") in ("input", "output"):
            hooks[(c.get("family"), c.get("table"), c.get("name"))] = c.get("hook")
    out = []
    for it in items:
        r = it.get("rule") if isinstance(it, dict) else None
        if not isinstance(r, dict):
            continue
        hook = hooks.get((r.get("family"), r.get("table"), r.get("chain")))
        exprs = r.get("expr") if isinstance(r.get("expr"), list) else []
        verdict = next((k for e in exprs if isinstance(e, dict) for k in ("drop", "reject") if k in e), None)
        if not hook or not verdict:
            continue
        udp, port, other = False, None, False
        for e in exprs:
            m = e.get("match") if isinstance(e, dict) else None
            if not isinstance(m, dict):
                continue
            left = m.get("left") if isinstance(m.get("left"), dict) else {}
            pl = left.get("payload") if isinstance(left.get("payload"), dict) else None
            if m.get("op") not in ("==", "in"):
                other = True
            elif pl and pl.get("protocol") == "udp" and pl.get("field") == "dport":
                udp, port = True, _nft_port_hits(m.get("right"))
            elif "meta" in left and (left["meta"] or {}).get("key") == "l4proto":
                udp = udp or m.get("right") in ("udp", 17)
        if other or (udp and port is False):
            continue
        if udp or not any(isinstance(e, dict) and "match" in e for e in exprs):
            out.append({"source": "nft", "chain": f"{r.get('family')} {r.get('table')} {r.get('chain')} ({hook})",
                        "rule": json.dumps(exprs, separators=(",", ":"))[:300], "target": verdict})
    return out


def udp4791_drops(answer: Any) -> list[dict[str, Any]]:
    """The rules in a ``read_rules`` answer that drop or reject RoCE v2 (UDP 4791) in INPUT or OUTPUT."""
    if not isinstance(answer, dict):
        return []
    out = _iptables_drops(answer["iptables"]) if isinstance(answer.get("iptables"), str) else []
    return out + _nft_drops(answer.get("nft"))
