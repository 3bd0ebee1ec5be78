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


def route_get(addr: str, timeout: float = 3.0) -> dict[str, Any]:
    """{"dev": ifname|None, "src": addr|None, "type": ..., "error": str|None}."""
    rc, out, err = _run(["ip", "-j", "route", "get", addr], timeout)
    if rc != 0:
        return {"dev": None, "src": None, "error": (err or out).strip() or f"ip route get exited {rc}"}
    try:
        routes = json.loads(out)
        r = routes[0] if isinstance(routes, list) and routes else {}
    except ValueError:
        return {"dev": None, "src": None, "error": f"unparsable ip -j route get output: {out[:80]!r}"}
    return {"dev": r.get("dev"), "src": r.get("prefsrc"), "type": r.get("type"), "error": None}


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


def local_addresses(root) -> dict[str, list[str]]:
    """{ifname: ["192.168.100.1/24", ...]}: IPv4 of this host (live: getifaddrs; snapshot: rdmacheck/addrs.json)."""
    from .net import addresses

    return {k: list((v or {}).get("ipv4") or []) for k, v in addresses(root).items() if isinstance(v, dict)}


def ifname_matches(spec: str, name: str) -> bool:
    """NCCL_SOCKET_IFNAME semantics (comma list of prefixes, ``=`` exact, ``^`` exclude), via ncclspec."""
    from ..ncclspec import parse_list_spec

    return parse_list_spec(spec, "NCCL_SOCKET_IFNAME").matches(name)
