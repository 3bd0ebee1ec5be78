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
    port: int | None = None  # None: NCCL's -1, any port (absent, empty, or atoi() gave -1)
    rail: int | None = None
    plane: int | None = None


# NCCL's list sizes: src/transport/net_ib/common.h MAX_IB_DEVS 32 (NCCL_IB_HCA), src/include/socket.h
# MAX_IFS 16 (NCCL_SOCKET_IFNAME); struct netIf's prefix is char[64] (src/include/utils.h), filled by
# snprintf, so an entry keeps its first 63 bytes.
MAX_IB_DEVS = 32
MAX_IFS = 16
_PREFIX_BYTES = 63


def _c_bytes(text: str) -> bytes:
    """The C string NCCL sees: UTF-8 (undecodable bytes kept through surrogateescape), cut at a NUL."""
    return text.encode("utf-8", "surrogateescape").split(b"\0", 1)[0]


def _c_str(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


@dataclasses.dataclass
class ListSpec:
    entries: list[SpecEntry]
    exclude: bool = False
    exact: bool = False
    raw: str = ""

    def matches(self, name: str, port: int | None = None) -> bool:
        """Would NCCL use ``name`` (and ``port``) under this spec?

        NVIDIA/nccl src/transport/net_ib/init.cc (ncclIbInitDevices):
        ``if (!(matchIfList(devices[d]->name, port_num, userIfs, nUserIfs, searchExact, &userIfId) ^ searchNot))
        continue;`` and src/misc/utils.cc matchIfList: an empty list matches every name, so ``^`` (or ``^=``)
        with no entry selects nothing."""
        hit = (not self.entries) or any(self._entry_matches(e, name, port) for e in self.entries)
        return hit != self.exclude

    def _entry_matches(self, e: SpecEntry, name: str, port: int | None) -> bool:
        # src/misc/utils.cc matchIf: exact compares strlen(string)+1 bytes (equality), else strlen(ref) bytes
        # (``ref`` a prefix of ``string``); matchPort: -1 on either side matches any port.
        n, ref = _c_bytes(name), _c_bytes(e.name)
        ok = n == ref if self.exact else n.startswith(ref)
        if ok and e.port is not None and port is not None:
            ok = e.port == port
        return ok

    def unmatched(self, names: Iterable[str]) -> list[SpecEntry]:
        names = list(names)
        return [e for e in self.entries if not any(self._entry_matches(e, n, None) for n in names)]


def c_atoi(text: str) -> int:
    """glibc ``atoi``: ``(int) strtol(text, NULL, 10)``: leading white space, a sign, decimal digits up to the
    first other character; no digits -> 0; strtol clamps to LONG_MIN/LONG_MAX and the cast keeps the low 32 bits
    (so a port of 99999999999999999999 reads as -1, NCCL's "any port")."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)", text)
    if not m:
        return 0
    v = int(m.group(2)) * (-1 if m.group(1) == "-" else 1)
    v = max(-(1 << 63), min((1 << 63) - 1, v))
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def parse_list_spec(text: str | None, what: str, with_ports: bool = False) -> ListSpec:
    """NCCL_IB_HCA / NCCL_SOCKET_IFNAME read exactly as NCCL reads them; never raises.

    The leading ``^`` and ``=`` (src/transport/net_ib/init.cc lines after ``ncclGetEnv("NCCL_IB_HCA")``;
    src/os/linux.cc ncclOsFindInterfaces) are only recognised as the very first characters; the rest goes to
    src/misc/utils.cc parseStringList: ``strtok_r(str, ",")`` (empty entries vanish), each entry split on
    ``:`` by strsep into prefix, port, rail, plane (``atoi``; absent or empty = -1), an entry whose prefix is
    empty is dropped, white space is *kept* (``mlx5_0, mlx5_1`` names `` mlx5_1``, which no device matches),
    at most MAX_IB_DEVS (32) entries for NCCL_IB_HCA and MAX_IFS (16) for NCCL_SOCKET_IFNAME.
    ``with_ports`` is kept for callers; NCCL parses ``:port`` in both lists (the socket layer passes port -1,
    which matches any)."""
    if text is None:
        return ListSpec(entries=[], raw="")
    s = _c_str(_c_bytes(text))
    exclude = s.startswith("^")
    if exclude:
        s = s[1:]
    exact = s.startswith("=")
    if exact:
        s = s[1:]
    limit = MAX_IB_DEVS if what == "NCCL_IB_HCA" else MAX_IFS
    entries: list[SpecEntry] = []
    for part in s.split(","):
        if len(entries) >= limit:
            break
        if not part:
            continue
        toks = part.split(":")
        if not toks[0]:
            continue

        def num(i: int) -> int | None:
            if i >= len(toks) or toks[i] == "":
                return None
            v = c_atoi(toks[i])
            return None if v == -1 else v

        name = _c_str(_c_bytes(toks[0])[:_PREFIX_BYTES])
        entries.append(SpecEntry(name, num(1), num(2), num(3)))
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


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def nccl_param_int(text: str | None) -> int | None:
    """An integer NCCL_PARAM as NCCL reads it; None when unset or empty (NCCL then uses its default).

    src/misc/param.cc ncclLoadParam: ``errno = 0; value = strtoll(str, nullptr, 0); if (errno) value = deftVal;``
    so a value beyond int64 (strtoll's ERANGE) is NCCL's default too: None.
    Raises ValueError for text NCCL would silently read as 0 or as a prefix (``"abc"``, ``"3x"``): the
    setting does not say what the user meant, so a gate must say so rather than guess."""
    if text is None or text == "":
        return None
    v, whole = c_strtol(text)
    if v is not None and not INT64_MIN <= v <= INT64_MAX:
        return None
    if v is None or not whole:
        raise ValueError(f"{text!r} is not an integer (NCCL would read it as {v or 0})")
    return v


def nccl_gid_index(value: int | None) -> int | None:
    """The GID index NCCL pins for NCCL_IB_GID_INDEX read as ``value`` (nccl_param_int), None for its automatic
    choice: src/transport/net_ib/connect.cc ``*gidIndex = ncclParamIbGidIndex(); if (*gidIndex >= 0) return``,
    where ``gidIndex`` is an ``int``: the int64 keeps its low 32 bits (4294967299 pins index 3)."""
    if value is None:
        return None
    v = value & 0xFFFFFFFF
    v = v - (1 << 32) if v >= 1 << 31 else v
    return v if v >= 0 else None


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


@dataclasses.dataclass(frozen=True)
class AddrRange:
    """NCCL_IB_ADDR_RANGE as NCCL holds it: the address bytes and the mask as ``int`` (may be negative)."""
    family: str
    base: bytes
    prefixlen: int
    text: str

    def matches(self, gid: bytes) -> bool:
        """src/transport/net_ib/connect.cc matchGidAddrPrefix: IPv4 compares the GID's last word under the
        mask; IPv6 walks the words; a negative mask matches nothing, 0 everything."""
        prefixlen = self.prefixlen
        words = [int.from_bytes(gid[i:i + 4], "big") for i in range(0, 16, 4)]
        base = [int.from_bytes(self.base[i:i + 4], "big") for i in range(0, len(self.base), 4)]
        i = 0
        while prefixlen > 0 and i < 4:
            if self.family == "inet":
                mask = (0xFFFFFFFF ^ ((1 << (32 - prefixlen)) - 1)) & 0xFFFFFFFF
                if (base[0] & mask) ^ (words[3] & mask):
                    break
                prefixlen = 0
                break
            if prefixlen >= 32:
                if base[i] ^ words[i]:
                    break
                prefixlen -= 32
                i += 1
            else:
                mask = (0xFFFFFFFF ^ ((1 << (32 - prefixlen)) - 1)) & 0xFFFFFFFF
                if (base[i] & mask) ^ (words[i] & mask):
                    break
                prefixlen = 0
        return prefixlen == 0

    def __str__(self) -> str:
        return self.text


def parse_addr_range(text: str | None, family: str) -> AddrRange | None:
    """NCCL_IB_ADDR_RANGE as src/transport/net_ib/connect.cc envIbAddrRange reads it; None when NCCL uses no
    range (unset, empty, no ``/`` mask, an address inet_pton refuses for the family, a mask over 32/128).

    The text is cut to 127 bytes (``char addrString[128]`` filled by snprintf), split at the first ``/``, the
    address read by inet_pton (Python's socket.inet_pton is glibc's), the mask by ``(int)strtol(.., 10)``.
    Never raises: NCCL ignores what it cannot read (``ignored_addr_range`` says why, for a gate to show)."""
    import socket

    if not text:
        return None
    raw = _c_bytes(text)[:127]
    if b"/" not in raw:
        return None
    addr, _, mask_s = raw.partition(b"/")
    af = socket.AF_INET if family == "inet" else socket.AF_INET6
    try:
        base = socket.inet_pton(af, addr.decode("latin-1"))
    except (OSError, ValueError):
        return None
    mask = c_atoi(_c_str(mask_s))
    if mask > (32 if family == "inet" else 128):
        return None
    return AddrRange(family, base, mask, text)


def ignored_addr_range(text: str | None, family: str) -> str | None:
    """Why NCCL ignores a set NCCL_IB_ADDR_RANGE (None when it is unset or NCCL uses it)."""
    if not text or parse_addr_range(text, family) is not None:
        return None
    fam = "AF_INET" if family == "inet" else "AF_INET6"
    if "/" not in text:
        return f"NCCL_IB_ADDR_RANGE={text!r} has no /mask: NCCL ignores it (every GID is in range)"
    return (f"NCCL_IB_ADDR_RANGE={text!r} is not an {fam} network NCCL can read: NCCL ignores it "
            "(every GID is in range)")


def gid_in_range(b: bytes, family: str, net) -> bool:
    """matchGidAddrPrefix: no range matches everything; IPv4 compares the last 4 bytes."""
    if net is None:
        return True
    if isinstance(net, AddrRange):
        return net.matches(b)
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
