"""Parse NCCL's own account of a run (``NCCL_DEBUG=INFO`` output).

NCCL says which transport it really used, and that is the only first-hand
account there is: a bench number alone cannot tell NET/IB over RoCE from a
silent fall-back to NET/Socket.  This module turns the INFO/WARN lines into
facts; :mod:`rdmacheck.bench.gates` judges them.

Line shapes (format strings from NVIDIA/nccl ``src/``; the prefix is
``host:pid:tid [cudaDev] NCCL INFO`` from ``debug.cc``, ``[cudaDev] file:line
NCCL WARN`` for warnings):

- ``NCCL version 2.28.9+cuda12.9``                                 (init.cc)
- ``Using network IB`` / ``Using network Socket``                   (init.cc)
- ``NET/IB : Using [0]mlx5_0:1/IB [1]roceP2p1s0f0:1/RoCE [RO]; OOB eth0:10.0.0.1<0>``
  (net_ib; ``:rail``/``:plane`` may follow the port)
- ``NET/IB : No device found.``                                     (net_ib)
- ``NET/Socket : Using [0]eth0:10.0.0.1<0> [1]...``                 (net_socket.cc)
- ``NET/IB : GPU Direct RDMA Enabled for HCA 0 'mlx5_0'``           (graph/topo.cc)
- ``GPU Direct RDMA Disabled for GPU 0 / HCA 0 (distance 5 > 4)``   (graph/paths.cc, <= 2.27;
  ``Enabled ... (distance 3 <= 4), read 0 mode Default``)
- ``NET/IB: NCCL Dev 0 IbDev 0 Port 1 qpn 1234 mtu 5 GID 3 (80FE/...)`` (net_ib, 2.18-2.27, RoCE)
- ``NCCL_IB_GID_INDEX set by environment to 3.``                    (param.cc)
- ``NCCL_IB_HCA set to mlx5_0``                                      (net_ib)
- ``Channel 00/0 : 0[0] -> 1[1] [send] via NET/IB/0/GDRDMA``        (transport/net.cc;
  ``NET/IB/0(1)/GDRDMA`` with a PXN proxy rank, ``(PCI)``, ``/Shared`` suffixes)
- ``Channel 00/0 : 0[0] -> 1[1] via P2P/IPC/read`` | ``P2P/CUMEM`` | ``P2P/direct pointer``
  | ``P2P/indirect/2[2]``                                             (transport/p2p.cc)
- ``Channel 00 : 0[0] -> 1[1] via SHM/direct/direct``               (transport/shm.cc)
- ``NET/IB : Got completion from peer 10.2.0.5<33092> with error 12, opcode 0, len 0, vendor err 129 (Recv)``
  (<= 2.2x) and ``NET/IB: Got completion from peer X with status=12 opcode=0 len=0 vendor err 129 (Recv) ... hca mlx5_0``
  (newer) (net_ib)

Lines may carry a launcher's prefix (``[1,0]<stdout>:``, ``[rank0]:``) and a
WARN may be wrapped over two lines in pasted logs; both are handled.
Nothing here reads the host: give it text or a file path.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterable

from rdmacheck.util.errors import UsageError

# ---------------------------------------------------------------- line prefix

# host:pid:tid [dev] NCCL INFO msg | [dev] file:line (func) NCCL WARN msg.  The
# host part is absent with NCCL_DEBUG=VERSION and in some pasted excerpts.
_LINE = re.compile(
    r"(?:(?P<host>[^\s:\[\]]+):(?P<pid>\d+):(?P<tid>\d+)\s+)?"
    r"(?:\[(?P<dev>\d+)\]\s+)?"
    r"(?:(?P<src>[\w./-]+:\d+)\s+(?:\([^)]*\)\s+)?)?"
    r"NCCL (?P<level>INFO|WARN|TRACE|CALL)\s?(?P<msg>.*)$"
)

# ---------------------------------------------------------------- messages

_VERSION = re.compile(r"^NCCL version (?P<v>\d+\.\d+\.\d+\S*)")
_USING_NETWORK = re.compile(r"^Using network (?P<name>\S+)")
_IB_USING = re.compile(r"^NET/IB\s*:\s*Using(?P<devs>(?:\s+\[\d+\]\S+)*)\s*(?P<ro>\[RO\])?\s*;\s*OOB\s+(?P<oob>\S+)")
_IB_DEV = re.compile(r"\[(?P<i>\d+)\](?P<name>[^\s:/]+):(?P<port>\d+)(?::[^/\s]*)?/(?P<link>\w+)")
_SOCK_USING = re.compile(r"^NET/Socket\s*:\s*Using(?P<devs>(?:\s+\[\d+\]\S+)+)")
_SOCK_DEV = re.compile(r"\[(?P<i>\d+)\](?P<name>[^\s:]+):(?P<addr>\S+)")
_OOB = re.compile(r"^(?P<ifname>[^:]+):(?P<addr>.+)$")
_IB_NO_DEV = re.compile(r"^NET/IB\s*:\s*No device found")
_GDR_HCA = re.compile(r"^NET/(?P<net>\w+)\s*:\s*GPU Direct RDMA (?P<state>Enabled|Disabled) for HCA (?P<i>\d+) '(?P<name>[^']*)'")
_GDR_GPU = re.compile(
    r"^GPU Direct RDMA (?P<state>Enabled|Disabled) for (?:GPU (?P<gpu>\w+) / HCA (?P<hca>\w+))?(?P<rest>.*)$"
)
_GDR_DIST = re.compile(r"\(distance (?P<d>\d+) (?P<op><=|>) (?P<lvl>\d+)\)")
_QP_GID = re.compile(
    r"^NET/IB: NCCL (?:Merged)?Dev (?P<dev>\d+) IbDev (?P<ibdev>\d+) Port (?P<port>\d+) qpn (?P<qpn>\d+) mtu (?P<mtu>\d+)"
    r"(?:.*?\bGID (?P<gid>-?\d+))?(?:.*?\bLID (?P<lid>\d+))?"
)
_QP_GID_OLD = re.compile(r"^NET/IB: Dev (?P<dev>\d+) Port (?P<port>\d+) qpn (?P<qpn>\d+) mtu (?P<mtu>\d+) GID (?P<gid>-?\d+)")
_ENV_SET = re.compile(r"^(?P<key>NCCL_[A-Z0-9_]+) set by environment to (?P<value>.*?)\.?$")
_IB_HCA_SET = re.compile(r"^NCCL_IB_HCA set to (?P<value>\S+)")
_CHANNEL = re.compile(
    r"^Channel (?P<ch>\d+)(?:/(?P<conn>\d+))? : (?P<src>\d+)\[(?P<srcdev>[0-9a-fA-Fx]+)\] -> "
    r"(?P<dst>\d+)\[(?P<dstdev>[0-9a-fA-Fx]+)\](?: \[(?P<dir>send|receive)\])? via (?P<via>\S+(?: pointer)?\S*)"
)
_COMPLETION_OLD = re.compile(
    r"Got completion from peer (?P<peer>\S+) with error (?P<status>\d+), opcode (?P<opcode>\d+), len (?P<len>\d+), "
    r"vendor err (?P<vendor>\d+)(?: \((?P<kind>[^)]*)\))?"
)
_COMPLETION_NEW = re.compile(
    r"Got completion from peer (?P<peer>\S+) with status=(?P<status>\d+) opcode=(?P<opcode>\d+) len=(?P<len>\d+) "
    r"vendor err (?P<vendor>\d+)(?: \((?P<kind>[^)]*)\))?(?:.*?\bhca (?P<hca>\S+))?"
)
# "Failed to open libibverbs.so[.1]" (<= 2.2x, said once all names failed); newer ibvsymbols.cc says
# "Count not open %s" (sic) per name tried -- libibverbs.so, then libibverbs.so.1 -- so only the last
# name failing means the library is missing (a missing dev symlink libibverbs.so alone is normal).
_LIBIBVERBS = re.compile(r"Failed to open libibverbs|Cou(?:ld|nt) not open libibverbs\.so\.1\b", re.IGNORECASE)

# ibv_wc_status names for the completion codes NCCL prints as numbers (verbs.h).
WC_STATUS = {
    1: "IBV_WC_LOC_LEN_ERR", 2: "IBV_WC_LOC_QP_OP_ERR", 3: "IBV_WC_LOC_EEC_OP_ERR", 4: "IBV_WC_LOC_PROT_ERR",
    5: "IBV_WC_WR_FLUSH_ERR", 6: "IBV_WC_MW_BIND_ERR", 7: "IBV_WC_BAD_RESP_ERR", 8: "IBV_WC_LOC_ACCESS_ERR",
    9: "IBV_WC_REM_INV_REQ_ERR", 10: "IBV_WC_REM_ACCESS_ERR", 11: "IBV_WC_REM_OP_ERR",
    12: "IBV_WC_RETRY_EXC_ERR", 13: "IBV_WC_RNR_RETRY_EXC_ERR", 14: "IBV_WC_LOC_RDD_VIOL_ERR",
    15: "IBV_WC_REM_INV_RD_REQ_ERR", 16: "IBV_WC_REM_ABORT_ERR", 17: "IBV_WC_INV_EECN_ERR",
    18: "IBV_WC_INV_EEC_STATE_ERR", 19: "IBV_WC_FATAL_ERR", 20: "IBV_WC_RESP_TIMEOUT_ERR", 21: "IBV_WC_GENERAL_ERR",
}


# ---------------------------------------------------------------- facts


@dataclasses.dataclass
class NetDevice:
    """One device a NET plugin announced: ``[0]mlx5_0:1/RoCE`` or ``[0]eth0:10.0.0.1<0>``."""

    index: int
    name: str
    port: int | None = None  # IB/RoCE port; None for sockets
    link: str | None = None  # "IB" | "RoCE" for NET/IB; None for sockets
    addr: str | None = None  # socket address for NET/Socket


@dataclasses.dataclass
class GdrInfo:
    """A ``GPU Direct RDMA Enabled/Disabled`` line."""

    enabled: bool
    net: str | None = None  # "IB" / "Socket" for the per-HCA topo.cc line; None for the per-GPU paths.cc line
    hca_index: int | None = None
    hca_name: str | None = None
    gpu: str | None = None
    distance: int | None = None
    level: int | None = None


@dataclasses.dataclass
class ChannelPath:
    """One ``Channel cc/c : a[da] -> b[db] [send] via X`` line."""

    channel: int
    conn: int | None
    src_rank: int
    dst_rank: int
    direction: str | None  # "send" | "receive" | None (P2P/SHM lines have none)
    via: str  # "NET/IB/0/GDRDMA", "P2P/IPC/read", "SHM/direct/direct"
    host: str | None = None
    pid: int | None = None

    @property
    def transport(self) -> str:
        """NET, P2P, SHM or COLLNET (the first part of ``via``)."""
        return self.via.split("/", 1)[0]

    @property
    def net(self) -> str | None:
        """IB / Socket / a plugin's name for NET paths, else None."""
        if self.transport != "NET":
            return None
        parts = self.via.split("/")
        return parts[1] if len(parts) > 1 else None

    @property
    def net_dev(self) -> int | None:
        if self.transport != "NET":
            return None
        parts = self.via.split("/")
        m = re.match(r"(\d+)", parts[2]) if len(parts) > 2 else None
        return int(m.group(1)) if m else None

    @property
    def gdr(self) -> bool:
        return "/GDRDMA" in self.via

    @property
    def kind(self) -> str:
        """Path without channel detail: ``NET/IB/GDRDMA``, ``NET/Socket``, ``P2P/IPC``, ``SHM/direct``."""
        parts = self.via.split("/")
        if self.transport == "NET":
            return "/".join(p for p in (parts[0], parts[1] if len(parts) > 1 else "") if p) + ("/GDRDMA" if self.gdr else "")
        return "/".join(parts[:2]).replace(" pointer", "")


@dataclasses.dataclass
class NcclError:
    """A WARN line (completion errors get their fields parsed)."""

    message: str
    source: str | None = None
    host: str | None = None
    kind: str = "warn"  # "completion" | "warn"
    peer: str | None = None
    status: int | None = None
    status_name: str | None = None
    vendor_err: int | None = None
    opcode: int | None = None
    hca: str | None = None


@dataclasses.dataclass
class NcclLog:
    """Facts from one or more NCCL debug outputs.  Empty lists mean 'not said'."""

    sources: list[str] = dataclasses.field(default_factory=list)
    version: str | None = None
    hosts: list[str] = dataclasses.field(default_factory=list)
    networks: list[str] = dataclasses.field(default_factory=list)  # "Using network X", in order, unique
    ib_devices: list[NetDevice] = dataclasses.field(default_factory=list)
    socket_devices: list[NetDevice] = dataclasses.field(default_factory=list)
    oob: str | None = None  # "eth0:10.2.0.4<0>" from the NET/IB line
    relaxed_ordering: bool | None = None
    ib_no_device: bool = False
    libibverbs_missing: bool = False
    gdr: list[GdrInfo] = dataclasses.field(default_factory=list)
    gid_indexes: list[int] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # NCCL_* NCCL said it took from the environment
    channels: list[ChannelPath] = dataclasses.field(default_factory=list)
    errors: list[NcclError] = dataclasses.field(default_factory=list)
    nccl_lines: int = 0  # lines recognised as NCCL output

    # -------------------------------------------------------------- views

    @property
    def net_plugin(self) -> str | None:
        """The network NCCL used between nodes: IB, Socket, or a plugin name.

        Order of evidence: ``Using network X`` (said once the comm is up), then
        the NET channel lines, then which NET plugin announced devices.
        """
        if self.networks:
            return self.networks[-1]
        nets = [c.net for c in self.channels if c.net]
        if nets:
            return max(set(nets), key=nets.count)
        if self.ib_devices:
            return "IB"
        if self.socket_devices:
            return "Socket"
        return None

    @property
    def net_channels(self) -> list[ChannelPath]:
        return [c for c in self.channels if c.transport == "NET"]

    @property
    def path_kinds(self) -> dict[str, int]:
        """Count of channel lines per path kind (``NET/IB/GDRDMA``: 4, ...)."""
        out: dict[str, int] = {}
        for c in self.channels:
            out[c.kind] = out.get(c.kind, 0) + 1
        return dict(sorted(out.items()))

    @property
    def gdr_enabled(self) -> bool | None:
        """True when every NET channel used GDRDMA, False when one did not; else the RDMA GDR lines' verdict.

        NET/Socket also prints "GPU Direct RDMA Disabled for HCA 0 'eth0'" on every run (seen with NCCL
        2.28.9 on a host without RDMA): those lines say nothing about GDR and are left out.
        """
        nets = self.net_channels
        if nets:
            return all(c.gdr for c in nets)
        rdma = [g for g in self.gdr if g.net != "Socket"]
        if rdma:
            return all(g.enabled for g in rdma)
        return None

    @property
    def ib_links(self) -> list[str]:
        return sorted({d.link for d in self.ib_devices if d.link})

    @property
    def completion_errors(self) -> list[NcclError]:
        return [e for e in self.errors if e.kind == "completion"]

    def used_hcas(self) -> list[str]:
        """HCA names of the NET/IB devices the NET channels used (by index into the NET/IB list)."""
        by_index = {d.index: d.name for d in self.ib_devices}
        names = []
        for c in self.net_channels:
            if c.net == "IB" and c.net_dev is not None and c.net_dev in by_index:
                n = by_index[c.net_dev]
                if n not in names:
                    names.append(n)
        return names

    def nodes(self) -> list[str]:
        """Every node the log proves took part: the hosts of its line prefixes, plus each peer a NET
        completion error names (``from peer 10.2.0.5<33092>``: another node's address, reported by this
        one).  A log from two nodes can name one host only (each rank writes its own file)."""
        out = list(self.hosts)
        own = (self.oob or "").split(":", 1)[-1].split("<", 1)[0]
        for e in self.completion_errors:
            peer = (e.peer or "").split("<", 1)[0]
            if peer and peer != own and f"peer {peer}" not in out:
                out.append(f"peer {peer}")
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready digest (what evidence keeps and what ranks send to rank 0)."""
        return {
            "sources": list(self.sources),
            "version": self.version,
            "hosts": list(self.hosts),
            "net_plugin": self.net_plugin,
            "networks": list(self.networks),
            "ib_devices": [dataclasses.asdict(d) for d in self.ib_devices],
            "socket_devices": [dataclasses.asdict(d) for d in self.socket_devices],
            "oob": self.oob,
            "ib_no_device": self.ib_no_device,
            "libibverbs_missing": self.libibverbs_missing,
            "gdr_enabled": self.gdr_enabled,
            "gdr": [dataclasses.asdict(g) for g in self.gdr],
            "gid_indexes": sorted(set(self.gid_indexes)),
            "env": dict(self.env),
            "paths": self.path_kinds,
            "used_hcas": self.used_hcas(),
            "net_channels": len(self.net_channels),
            "errors": [dataclasses.asdict(e) for e in self.errors],
            "nccl_lines": self.nccl_lines,
        }

    # -------------------------------------------------------------- merging

    def merge(self, other: "NcclLog") -> "NcclLog":
        """Combine two logs (e.g. the per-rank files of one run) into a new one."""
        out = NcclLog()
        for a in (self, other):
            out.sources += a.sources
            out.version = out.version or a.version
            out.hosts += [h for h in a.hosts if h not in out.hosts]
            out.networks += [n for n in a.networks if n not in out.networks]
            known = {(d.index, d.name) for d in out.ib_devices}
            out.ib_devices += [d for d in a.ib_devices if (d.index, d.name) not in known]
            known = {(d.index, d.name) for d in out.socket_devices}
            out.socket_devices += [d for d in a.socket_devices if (d.index, d.name) not in known]
            out.oob = out.oob or a.oob
            if a.relaxed_ordering is not None:
                out.relaxed_ordering = a.relaxed_ordering
            out.ib_no_device |= a.ib_no_device
            out.libibverbs_missing |= a.libibverbs_missing
            out.gdr += a.gdr
            out.gid_indexes += a.gid_indexes
            out.env.update(a.env)
            out.channels += a.channels
            out.errors += a.errors
            out.nccl_lines += a.nccl_lines
        return out


# ---------------------------------------------------------------- parser


def _logical_lines(text: str) -> Iterable[str]:
    """Physical lines with wrapped continuations joined.

    Pasted logs (and terminals) wrap long WARN lines: a line that is not NCCL
    output and follows a NCCL line is taken as its continuation.  ``#`` comment
    lines (the ``# source:`` header of captured excerpts) are skipped.
    """
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            if pending is not None:
                yield pending
                pending = None
            continue
        if "NCCL " in line and _LINE.search(line):
            if pending is not None:
                yield pending
            pending = line
        elif pending is not None and not re.match(r"^\s*(\[|\w+:\d+:\d+ )", line):
            # wrapped continuation; rejoin with the space the wrap replaced
            pending = pending + " " + line.strip()
        else:
            if pending is not None:
                yield pending
                pending = None
            yield line
    if pending is not None:
        yield pending


def parse_text(text: str, source: str | None = None) -> NcclLog:
    """Parse NCCL debug output.  Lines that are not NCCL's are ignored."""
    log = NcclLog(sources=[source] if source else [])
    for line in _logical_lines(text):
        m = _LINE.search(line)
        if not m:
            continue
        log.nccl_lines += 1
        host = m.group("host")
        pid = int(m.group("pid")) if m.group("pid") else None
        if host and host not in log.hosts:
            log.hosts.append(host)
        level, msg = m.group("level"), m.group("msg").strip()
        if level == "WARN":
            _parse_warn(log, msg, m.group("src"), host)
            continue
        if level != "INFO":
            continue
        _parse_info(log, msg, host, pid)
    return log


def _parse_warn(log: NcclLog, msg: str, src: str | None, host: str | None) -> None:
    err = NcclError(message=msg, source=src, host=host)
    cm = _COMPLETION_NEW.search(msg) or _COMPLETION_OLD.search(msg)
    if cm:
        err.kind = "completion"
        err.peer = cm.group("peer")
        err.status = int(cm.group("status"))
        err.status_name = WC_STATUS.get(err.status)
        err.vendor_err = int(cm.group("vendor"))
        err.opcode = int(cm.group("opcode"))
        err.hca = cm.groupdict().get("hca")
    if _LIBIBVERBS.search(msg):
        log.libibverbs_missing = True
    log.errors.append(err)


def _parse_info(log: NcclLog, msg: str, host: str | None, pid: int | None) -> None:
    if (m := _VERSION.match(msg)):
        log.version = log.version or m.group("v")
    elif (m := _USING_NETWORK.match(msg)):
        if m.group("name") not in log.networks:
            log.networks.append(m.group("name"))
    elif (m := _IB_USING.match(msg)):
        for d in _IB_DEV.finditer(m.group("devs")):
            dev = NetDevice(int(d.group("i")), d.group("name"), int(d.group("port")), d.group("link"))
            if all((x.index, x.name) != (dev.index, dev.name) for x in log.ib_devices):
                log.ib_devices.append(dev)
        log.relaxed_ordering = bool(m.group("ro"))
        log.oob = m.group("oob")
    elif _IB_NO_DEV.match(msg):
        log.ib_no_device = True
    elif (m := _SOCK_USING.match(msg)):
        for d in _SOCK_DEV.finditer(m.group("devs")):
            dev = NetDevice(int(d.group("i")), d.group("name"), addr=d.group("addr"))
            if all((x.index, x.name) != (dev.index, dev.name) for x in log.socket_devices):
                log.socket_devices.append(dev)
    elif (m := _GDR_HCA.match(msg)):
        log.gdr.append(GdrInfo(enabled=m.group("state") == "Enabled", net=m.group("net"), hca_index=int(m.group("i")),
                               hca_name=m.group("name")))
    elif (m := _GDR_GPU.match(msg)):
        g = GdrInfo(enabled=m.group("state") == "Enabled", gpu=m.group("gpu"))
        hca = m.group("hca")
        if hca is not None:
            try:
                g.hca_index = int(hca, 16)  # printed %lx (netId) or %d; equal below 10
            except ValueError:
                g.hca_name = hca
        if (d := _GDR_DIST.search(m.group("rest") or "")):
            g.distance, g.level = int(d.group("d")), int(d.group("lvl"))
        log.gdr.append(g)
    elif (m := _QP_GID.match(msg) or _QP_GID_OLD.match(msg)):
        gid = m.groupdict().get("gid")
        if gid is not None:
            log.gid_indexes.append(int(gid))
    elif (m := _IB_HCA_SET.match(msg)):
        log.env["NCCL_IB_HCA"] = m.group("value")
    elif (m := _ENV_SET.match(msg)):
        log.env[m.group("key")] = m.group("value").strip()
        if m.group("key") == "NCCL_IB_GID_INDEX":
            try:
                log.gid_indexes.append(int(m.group("value").strip()))
            except ValueError:
                pass
    elif (m := _CHANNEL.match(msg)):
        log.channels.append(ChannelPath(
            channel=int(m.group("ch")),
            conn=int(m.group("conn")) if m.group("conn") is not None else None,
            src_rank=int(m.group("src")),
            dst_rank=int(m.group("dst")),
            direction=m.group("dir"),
            via=m.group("via"),
            host=host,
            pid=pid,
        ))
    elif _LIBIBVERBS.search(msg):
        log.libibverbs_missing = True


def parse_file(path: str | Path) -> NcclLog:
    from rdmacheck.util.inputs import LOG_MAX, read_input_text

    p = Path(path)
    text = read_input_text(p, "NCCL log", LOG_MAX, errors="replace",
                           missing=f"NCCL log {p} not found; pass the file NCCL_DEBUG_FILE wrote")
    return parse_text(text, source=str(p))


def parse_files(paths: Iterable[str | Path]) -> NcclLog:
    """Parse and merge several per-rank files into one account of the run."""
    out = NcclLog()
    for p in paths:
        out = out.merge(parse_file(p))
    return out
