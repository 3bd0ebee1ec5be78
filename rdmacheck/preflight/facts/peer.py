"""Peer reachability probes, each with a hard time bound.

* ``resolve``: getaddrinfo in a daemon thread.  glibc's resolver has no
  per-call timeout; with a dead nameserver in resolv.conf it waits
  ``timeout x attempts`` per server (5 s x 2 by default, per address family),
  so a black-holed DNS would stall preflight for tens of seconds.  We wait at
  most ``timeout`` and abandon the thread.
* ``route_get``: ``ip -j route get ADDR`` (the kernel's routing decision: the
  interface traffic to the peer really leaves through).
* ``tcp_connect``: a non-blocking connect with a timeout (an address nobody
  answers ARP for costs ~3 s of EHOSTUNREACH or the full timeout).
* ``df_ping``: ``ping -M do -s MTU-28`` (28 = IPv4 20 + ICMP 8 header bytes):
  proves frames of the full MTU cross the path without fragmentation.
* ``port_free``: bind test with SO_REUSEADDR (TIME_WAIT leftovers do not count
  as busy, exactly as a server that sets SO_REUSEADDR would see it).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

RESOLVE_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 3.0
PING_COUNT = 2
PING_WAIT_S = 1


def resolve(name: str, timeout: float = RESOLVE_TIMEOUT_S) -> dict[str, Any]:
    """{"addrs": [...IPv4 first...], "error": str|None, "elapsed_s": float, "timed_out": bool}."""
    t0 = time.monotonic()
    try:
        ipaddress.ip_address(name)
        return {"addrs": [name], "error": None, "elapsed_s": 0.0, "timed_out": False}
    except ValueError:
        pass
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            addrs: list[str] = []
            for fam, *_rest, sa in infos:
                a = sa[0]
                if a not in addrs:
                    addrs.append(a)
            addrs.sort(key=lambda a: ":" in a)  # IPv4 first: the RoCE mesh is IPv4
            box["addrs"] = addrs
        except (socket.gaierror, UnicodeError, OSError) as e:
            box["error"] = str(e)

    th = threading.Thread(target=work, name="rdmacheck-resolve", daemon=True)
    th.start()
    th.join(timeout)
    elapsed = round(time.monotonic() - t0, 3)
    if th.is_alive():
        return {"addrs": [], "error": f"no answer within {timeout:g} s (DNS server unreachable?)",
                "elapsed_s": elapsed, "timed_out": True}
    return {"addrs": box.get("addrs", []), "error": box.get("error"), "elapsed_s": elapsed, "timed_out": False}


def _run(cmd: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(returncode or None on timeout/missing tool, stdout, stderr)."""
    if not shutil.which(cmd[0]):
        return None, "", f"{cmd[0]} not found"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", f"{' '.join(cmd)} did not finish within {timeout:g} s"
    except OSError as e:
        return None, "", str(e)
    return p.returncode, p.stdout, p.stderr


def _prefix_len(dst: Any) -> int:
    if dst == "default":
        return 0
    try:
        return ipaddress.ip_network(str(dst), strict=False).prefixlen
    except ValueError:
        return -1


def route_prefix(addr: str, dev: str | None, timeout: float = 3.0) -> str | None:
    """The main table's route that sends ``addr`` out of ``dev``, as ``ip route`` writes its destination
    ("10.0.0.0/25", "10.0.0.2" for a host route, "default"): the longest prefix covering ``addr`` on that
    device.  None when the table says nothing (policy routing through another table, an error)."""
    if not dev:
        return None
    rc, out, _ = _run(["ip", "-j", "route", "show", "match", addr], timeout)
    try:
        routes = json.loads(out) if rc == 0 else []
    except ValueError:
        return None
    mine = [r for r in routes if isinstance(r, dict) and r.get("dev") == dev and r.get("dst")]
    best = max(mine, key=lambda r: _prefix_len(r["dst"]), default=None)
    return str(best["dst"]) if best else None


def route_get(addr: str, timeout: float = 3.0) -> dict[str, Any]:
    """{"dev": ifname|None, "src": addr|None, "type": ..., "prefix": the route's destination|None, "error": str|None}."""
    rc, out, err = _run(["ip", "-j", "route", "get", addr], timeout)
    if rc != 0:
        return {"dev": None, "src": None, "error": (err or out).strip() or f"ip route get exited {rc}"}
    try:
        routes = json.loads(out)
        r = routes[0] if isinstance(routes, list) and routes else {}
    except ValueError:
        return {"dev": None, "src": None, "error": f"unparsable ip -j route get output: {out[:80]!r}"}
    return {"dev": r.get("dev"), "src": r.get("prefsrc"), "type": r.get("type"),
            "prefix": route_prefix(addr, r.get("dev"), timeout), "error": None}


def tcp_connect(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """{"ok": bool, "error": str|None, "elapsed_s": float}."""
    t0 = time.monotonic()
    try:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
        return {"ok": True, "error": None, "elapsed_s": round(time.monotonic() - t0, 3)}
    except socket.timeout:
        err = f"no answer within {timeout:g} s"
    except OSError as e:
        err = e.strerror or str(e)
    return {"ok": False, "error": err, "elapsed_s": round(time.monotonic() - t0, 3)}


def df_ping(addr: str, mtu: int, ifname: str | None = None, count: int = PING_COUNT,
            wait_s: int = PING_WAIT_S) -> dict[str, Any]:
    """Do-not-fragment ping with a payload that fills the MTU (IPv4: MTU - 28)."""
    payload = mtu - (48 if ":" in addr else 28)  # IPv6 header 40 + ICMPv6 8
    # no -q: quiet mode hides "local error: message too long, mtu=1500", the clearest diagnosis there is
    cmd = ["ping", "-n", "-M", "do", "-s", str(payload), "-c", str(count), "-W", str(wait_s)]
    if ifname:
        cmd += ["-I", ifname]
    cmd.append(addr)
    # ping -W bounds each reply wait; the interval (1 s) between probes adds count-1 seconds.
    timeout = count * (wait_s + 1) + 3
    t0 = time.monotonic()
    rc, out, err = _run(cmd, timeout)
    text = (out + err).strip()
    received = None
    for line in text.splitlines():
        if "packets transmitted" in line:
            try:
                received = int(line.split(",")[1].split()[0])
            except (IndexError, ValueError):
                pass
    reason = None
    if rc != 0:
        low = text.lower()
        if "message too long" in low or "frag needed" in low:
            mtu_hint = ""
            for tok in text.replace(",", " ").split():
                if tok.startswith("mtu="):
                    mtu_hint = f" (path MTU {tok[4:]})"
            reason = f"a {mtu}-byte frame does not fit the local path{mtu_hint}"
        elif received == 0:
            reason = f"no reply to {payload}-byte do-not-fragment pings: a hop on the path drops frames of MTU {mtu}, or the peer is down"
        else:
            reason = text.splitlines()[-1] if text else f"ping exited {rc}"
    return {"ok": rc == 0, "payload": payload, "received": received, "reason": reason,
            "cmd": " ".join(cmd), "output": text[-400:], "elapsed_s": round(time.monotonic() - t0, 3)}


def port_free(port: int, host: str = "0.0.0.0") -> dict[str, Any]:
    """Can a server bind TCP ``port`` now?  {"free": bool, "error": str|None}."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return {"free": True, "error": None}
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return {"free": False, "error": f"port {port} is already in use"}
        if e.errno == errno.EACCES:
            return {"free": False, "error": f"binding port {port} needs privileges"}
        return {"free": False, "error": e.strerror or str(e)}


def ping_target(addr: str, mtu: int, dev: str | None) -> str:
    """The probe key of a DF ping: the answer holds only for this address, MTU and interface."""
    return f"{addr} mtu {mtu} dev {dev}"


def ifname_matches(spec: str, name: str) -> bool:
    """NCCL_SOCKET_IFNAME semantics (comma list of prefixes, ``=`` exact, ``^`` exclude), via nccl.spec."""
    from rdmacheck.nccl.spec import parse_list_spec

    return parse_list_spec(spec, "NCCL_SOCKET_IFNAME").matches(name)


def parse_ray_address(text: str | None) -> tuple[str, int] | None:
    """``host:port``, ``ray://host:port``, ``[v6]:port`` -> (host, port); None for auto/unset/bad."""
    if not text or text.strip().lower() in ("auto", "local"):
        return None
    s = text.strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0]
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port.isdecimal() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def in_subnet(local: dict[str, list[str]], net) -> dict[str, list[str]]:
    """{ifname: [addr/len, ...]} of the addresses in ``local`` that lie inside ``net``."""
    out: dict[str, list[str]] = {}
    for ifname, addrs in local.items():
        for a in addrs:
            try:
                if ipaddress.ip_interface(a).ip in net:
                    out.setdefault(ifname, []).append(a)
            except ValueError:
                continue
    return out


def gather_peer(config, local: dict[str, list[str]], ask) -> dict[str, Any]:
    """MASTER_ADDR, its resolution, this node's role, and the probes net.peer and nccl.env judge.

    ``ask(kind, target, fn)`` runs (or, replaying, looks up) one probe and returns its answer
    or None.  The probes follow net.peer's steps and its guards: nothing is sent towards the
    head unless the route to it leaves through an interface on the RDMA subnet.
    """
    prof = config.profile
    name = config.get("MASTER_ADDR")
    info: dict[str, Any] = {"name": name, "addr": None, "resolve": None, "role": None, "local_if": None}
    if name:
        r = ask("resolve", name, lambda: resolve(name))
        info["resolve"] = r
        if r is not None:
            # the address in the mesh's family first (an IPv6 mesh resolves MASTER_ADDR to its IPv6 address)
            want6 = prof.network().version == 6
            fam = [a for a in r["addrs"] if (":" in a) == want6]
            info["addr"] = (fam or r["addrs"] or [None])[0]
        if info["addr"]:
            for ifname, addrs in local.items():
                if any(a.split("/")[0] == info["addr"] for a in addrs):
                    info["local_if"] = ifname
            try:
                loop = ipaddress.ip_address(info["addr"]).is_loopback
            except ValueError:
                loop = False
            info["role"] = "head" if info["local_if"] or loop else "worker"
    info["detected_role"] = info["role"]
    # The compose .env declares the role (RAY_MODE=head|worker); RDMACHECK_ROLE overrides for preflight only.
    for key in ("RDMACHECK_ROLE", "RAY_MODE"):
        declared = (config.get(key) or "").strip().lower()
        if declared in ("head", "worker"):
            info["role"], info["declared_role"], info["declared_by"] = declared, declared, key
            break
    mp = (config.get("MASTER_PORT") or "").strip()
    if info["role"] == "head" and mp.isdecimal() and 0 < int(mp) < 65536:
        ask("bind", str(int(mp)), lambda: port_free(int(mp)))
    addr = info["addr"]
    if not addr or info["local_if"]:
        return info
    rt = ask("route", addr, lambda: route_get(addr))
    dev = (rt or {}).get("dev")
    on_subnet = in_subnet(local, prof.network())
    ifspec = config.get("NCCL_SOCKET_IFNAME")
    if info["role"] == "head" or dev not in on_subnet or (ifspec and not ifname_matches(ifspec, dev)):
        return info
    ray = parse_ray_address(config.get("RAY_ADDRESS"))
    if ray:
        host, port = ray
        rr = ask("resolve", host, lambda: resolve(host)) if host != name else info["resolve"]
        target = ((rr or {}).get("addrs") or [None])[0]
        try:
            t_inside = target is not None and ipaddress.ip_address(target) in prof.network()
        except ValueError:
            t_inside = False
        if t_inside:
            trt = ask("route", target, lambda: route_get(target))
            if (trt or {}).get("dev") in on_subnet:
                ask("tcp", f"{target}:{port}", lambda: tcp_connect(target, port))
    ask("ping", ping_target(addr, prof.mtu, dev), lambda: df_ping(addr, prof.mtu, dev))
    return info
