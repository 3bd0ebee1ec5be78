"""NCCL's list syntax for NCCL_IB_HCA and NCCL_SOCKET_IFNAME, and its GID selection rule.

List syntax (NCCL's parseStringList/matchIfList): a leading ``^`` excludes the
listed entries, a leading ``=`` (after an optional ``^``) asks for exact names
instead of prefixes, entries are comma separated and NCCL_IB_HCA entries may
carry ``:port``.

GID selection reproduces ``ncclIbGetGidIndex``/``ncclUpdateGidIndex`` from
NCCL's net_ib (2.21+): start at index 0, walk 1..gid_tbl_len-1 and move to a
candidate when it is of the wanted address family and inside
NCCL_IB_ADDR_RANGE while the current one is of another family; or when both
are of the same family, the candidate is valid (configured, not fe80
link-local) and in range, and it has the wanted RoCE version while the current
one has a different version or is not valid.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Callable, Iterable

from rdmacheck.util.errors import UsageError


@dataclasses.dataclass
class SpecEntry:
    name: str
    port: int | None = None


@dataclasses.dataclass
class ListSpec:
    entries: list[SpecEntry]
    exclude: bool = False
    exact: bool = False
    raw: str = ""

    def matches(self, name: str, port: int | None = None) -> bool:
        """Would NCCL use ``name`` (and ``port``) under this spec?"""
        if not self.entries:
            return True
        hit = any(self._entry_matches(e, name, port) for e in self.entries)
        return not hit if self.exclude else hit

    def _entry_matches(self, e: SpecEntry, name: str, port: int | None) -> bool:
        ok = name == e.name if self.exact else name.startswith(e.name)
        if ok and e.port is not None and port is not None:
            ok = e.port == port
        return ok

    def unmatched(self, names: Iterable[str]) -> list[SpecEntry]:
        names = list(names)
        return [e for e in self.entries if not any(
            (n == e.name if self.exact else n.startswith(e.name)) for n in names)]


def parse_list_spec(text: str | None, what: str, with_ports: bool = False) -> ListSpec:
    if text is None or not text.strip():
        return ListSpec(entries=[], raw=text or "")
    s = text.strip()
    exclude = s.startswith("^")
    if exclude:
        s = s[1:]
    exact = s.startswith("=")
    if exact:
        s = s[1:]
    entries: list[SpecEntry] = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        port = None
        if with_ports and ":" in part:
            part, _, p = part.partition(":")
            if not p.isdecimal() or int(p) < 1:
                raise UsageError(f"{what}={text!r}: port {p!r} is not a port number; write e.g. mlx5_0:1")
            port = int(p)
        if not part:
            raise UsageError(f"{what}={text!r}: empty device name; write e.g. roceP2p1s0f0 or =mlx5_0:1")
        entries.append(SpecEntry(part, port))
    return ListSpec(entries=entries, exclude=exclude, exact=exact, raw=text)


def hca_selected(text: str | None, name: str, port: int | None = None) -> bool:
    """Whether NCCL_IB_HCA=``text`` lets NCCL use HCA ``name`` (port ``port``); unset selects every HCA.

    For judging a run after the fact (bench.transport, the path proof's counters): a spec the
    ``rdma.devices`` gate refuses as malformed selects nothing here rather than raising."""
    try:
        spec = parse_list_spec(text, "NCCL_IB_HCA", with_ports=True)
    except UsageError:
        return False
    return spec.matches(name, port)


# ---------------------------------------------------------------- NCCL's number parsing

_C_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def c_strtol(text: str) -> tuple[int | None, bool]:
    """C's ``strtol(text, &end, 0)`` as NCCL calls it: (value, whole text consumed).

    Base 0: ``0x`` hex, a leading ``0`` octal, else decimal; leading white space skipped; parsing stops at
    the first character that does not fit (``"08"`` reads 0).  No digits at all: ``(None, False)`` where C
    would return 0.  NCCL_PARAM integers (src/misc/param.cc ncclLoadParam: ``strtoll(str, nullptr, 0)``,
    empty string = default) and NCCL_NET_GDR_LEVEL's legacy numbers (src/graph/paths.cc ncclGetLevel) read so.
    """
    m = _C_INT.match(text)
    if not m:
        return None, False
    v = int(m.group(2), 16) if m.group(2)[:2].lower() == "0x" else int(m.group(2), 8 if m.group(2).startswith("0") else 10)
    return (-v if m.group(1) == "-" else v), m.end() == len(text)


def nccl_param_int(text: str | None) -> int | None:
    """An integer NCCL_PARAM as NCCL reads it; None when unset or empty (NCCL then uses its default).

    Raises ValueError for text NCCL would silently read as 0 or as a prefix (``"abc"``, ``"3x"``): the
    setting does not say what the user meant, so a gate must say so rather than guess."""
    if text is None or text == "":
        return None
    v, whole = c_strtol(text)
    if v is None or not whole:
        raise ValueError(f"{text!r} is not an integer (NCCL would read it as {v or 0})")
    return v


# ---------------------------------------------------------------- GID selection

def _words(b: bytes) -> list[int]:
    return [int.from_bytes(b[i:i + 4], "big") for i in range(0, 16, 4)]


def gid_family(b: bytes) -> str:
    """"inet" for IPv4-mapped (and IPv4-mapped multicast) GIDs, else "inet6" (getGidAddrFamily)."""
    w = _words(b)
    mapped = (w[0] | w[1]) == 0 and w[2] == 0x0000FFFF
    mapped_mc = w[0] == 0xFF0E0000 and w[1] == 0 and w[2] == 0x0000FFFF
    return "inet" if mapped or mapped_mc else "inet6"


def gid_configured(b: bytes) -> bool:
    w = _words(b)
    trailer = w[1] | w[2] | w[3]
    return not ((w[0] | trailer) == 0 or (w[0] == 0xFE800000 and trailer == 0))


def gid_link_local(b: bytes) -> bool:
    w = _words(b)
    return w[0] == 0xFE800000 and w[1] == 0


def gid_valid(b: bytes) -> bool:
    return gid_configured(b) and not gid_link_local(b)


def ib_addr_family(text: str | None) -> str:
    """NCCL_IB_ADDR_FAMILY as src/transport/net_ib/connect.cc envIbAddrFamily reads it: exactly "AF_INET6"
    is IPv6; anything else ("af_inet6" included: strcmp) is NCCL's default AF_INET."""
    return "inet6" if text == "AF_INET6" else "inet"


def parse_addr_range(text: str | None, family: str):
    """NCCL_IB_ADDR_RANGE (e.g. 192.168.100.0/24) -> network, None when unset."""
    if not text:
        return None
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise UsageError(f"NCCL_IB_ADDR_RANGE={text!r} is not a network; write e.g. 192.168.100.0/24") from None
    if (net.version == 4) != (family == "inet"):
        raise UsageError(f"NCCL_IB_ADDR_RANGE={text!r} does not match NCCL_IB_ADDR_FAMILY; use an IPv4 range with AF_INET")
    return net


def gid_in_range(b: bytes, family: str, net) -> bool:
    """matchGidAddrPrefix: no range matches everything; IPv4 compares the last 4 bytes."""
    if net is None:
        return True
    if family == "inet":
        return ipaddress.IPv4Address(b[12:]) in net
    return ipaddress.IPv6Address(b) in net


def predict_gid_index(
    table_len: int,
    gid_at: Callable[[int], bytes],
    version_at: Callable[[int], int | None],
    family: str = "inet",
    addr_range=None,
    roce_version: int = 2,
) -> int:
    """The GID index NCCL auto-selects on a RoCE port (NCCL_IB_GID_INDEX unset)."""
    idx = 0
    for cand in range(1, table_len):
        g, c = gid_at(idx), gid_at(cand)
        cfam, gfam = gid_family(c), gid_family(g)
        in_range = gid_in_range(c, family, addr_range)
        if cfam != gfam and cfam == family and in_range:
            idx = cand
            continue
        if cfam != family or not gid_valid(c) or not in_range:
            continue
        if (version_at(idx) != version_at(cand) or not gid_valid(g)) and version_at(cand) == roce_version:
            idx = cand
    return idx


# ---------------------------------------------------------------- socket interfaces (bootstrap)

def socket_family(text: str | None) -> str | None:
    """NCCL_SOCKET_FAMILY (src/misc/socket.cc ncclEnvSocketFamily): exactly "AF_INET" / "AF_INET6", else
    not forced (None: the first address found, of either family)."""
    return {"AF_INET": "inet", "AF_INET6": "inet6"}.get(text or "")


def socket_interfaces(
    addrs: dict[str, dict[str, list[str]]],
    running: Callable[[str], bool],
    ifname: str | None,
    family: str | None = None,
) -> list[tuple[str, str]]:
    """[(interface, address)] NCCL's socket layer would use for NCCL_SOCKET_IFNAME, in its order.

    Follows src/os/linux.cc ncclOsFindInterfaces: walk getifaddrs (glibc lists every interface's IPv4
    addresses, then the IPv6 ones), keep running interfaces of the forced family, skip ::1, match the
    NCCL list syntax, and keep only the *first* address of each interface.  The bootstrap (src/bootstrap.cc
    bootstrapNetInit, ncclFindInterfaces with maxIfs 1) advertises the first pair.  ``addrs`` is
    {ifname: {"ipv4": ["a/len", ...], "ipv6": [...]}} in getifaddrs order (facts.net.addresses).
    NCCL ignores a NCCL_SOCKET_IFNAME of one character (``strlen(env) > 1``); then, as when unset, it picks
    by its own order and the result here is [] (not judged).
    """
    if not ifname or len(ifname) <= 1:
        return []
    spec = parse_list_spec(ifname, "NCCL_SOCKET_IFNAME")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for fam, key in (("inet", "ipv4"), ("inet6", "ipv6")):
        if family and fam != family:
            continue
        for name, a in addrs.items():
            for addr in (a or {}).get(key) or []:
                ip = addr.split("/")[0]
                if fam == "inet6" and ip == "::1":
                    continue
                if name in seen or not running(name) or not spec.matches(name):
                    continue
                seen.add(name)
                out.append((name, addr))
    return out
