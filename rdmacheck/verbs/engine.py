"""A verbs engine on pyverbs: RC queue pairs as NCCL's net_ib sets them up, RDMA WRITE/READ with
content verification, bandwidth and ping-pong latency, and a loopback datapath check.

How the queue pairs are set up (as NCCL's ``net_ib`` does, src/transport/net_ib/connect.cc:
ncclIbQpInit / ncclIbQpRtr / ncclIbQpRts):

* RESET -> INIT: pkey index 0, the port, access REMOTE_WRITE | REMOTE_READ | LOCAL_WRITE.
* INIT -> RTR: path MTU = the smaller active MTU of the two ports (capped by ``QpParams.mtu``),
  the peer's QPN and PSN, max_dest_rd_atomic 1, min_rnr_timer 12, and on RoCE a global route:
  is_global 1, dgid = the peer's GID, sgid_index = our GID index, hop_limit 255, flow label 0,
  traffic_class = NCCL_IB_TC; sl = NCCL_IB_SL.
* RTR -> RTS: timeout = NCCL_IB_TIMEOUT (20), retry_cnt = NCCL_IB_RETRY_CNT (7), rnr_retry 7,
  max_rd_atomic 1, our PSN.  (NCCL uses PSN 0; we use a random 24-bit PSN as perftest does, sent to
  the peer with the QPNs, so a stale peer's packets are out of sequence rather than accepted.)

Every wait is bounded by the wall clock.  With NCCL's local ACK timeout (20: 4.096 us x 2^20 = 4.3 s
per try, 7 retries, about 30 s before the HCA reports IBV_WC_RETRY_EXC_ERR) the HCA's own verdict on a
dead path comes far too late for a pre-flight check, so the probes keep NCCL's value (the check proves
the settings NCCL will run with) and let a shorter wall-clock stall bound dominate: no completion
within ``stall_s`` ends the transfer with a typed timeout naming the likely cause (RoCE v2 on UDP 4791
dropped on the path, a wrong peer MAC/GID), the QPs are moved to the error state so the HCA flushes
what is still in flight, and the resources are destroyed.  A caller that wants the HCA's own verdict
passes a small ``QpParams.timeout`` and ``retry_cnt`` (14 and 3: 67 ms per try, about 0.3 s) and gets
IBV_WC_RETRY_EXC_ERR within the same bound.  (soft-RoCE, rxe, treats retry_cnt 7 -- NCCL's default -- as
"retry forever": there the HCA never gives up and only the wall clock ends a transfer on a dead path.)

Failures are values: every error carries a :class:`VerbsFailure` (stage, errno and its name, the
device node, the work completion status name, a one-line message with the likely cause).  Functions
that build resources raise :class:`VerbsError` holding it; the top-level checks (``write_bandwidth``,
``write_latency``, ``loopback_check``) return results holding it.
"""

from __future__ import annotations

import dataclasses
import errno as errno_mod
import gc
import hashlib
import importlib
import mmap
import os
import random
import resource
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

from rdmacheck.preflight.facts.verbs import IBV_MTU, _import_pyverbs

KiB = 1024
MiB = 1024 * KiB
MTU_ENUM = {v: k for k, v in IBV_MTU.items()}        # 4096 -> 5 (IBV_MTU_4096)
STAGES = ("open", "pd", "cq", "mr", "qp", "connect", "transfer", "verify")
DEFAULT_BW_SIZES = (64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB)
DEFAULT_LAT_SIZES = (8, 64, 512, 4 * KiB, 64 * KiB)
PORT_ACTIVE = 4
U24 = (1 << 24) - 1

# ibv_wc_status -> (name, what ibv_wc_status_str says, the likely cause on a RoCE fabric)
WC_STATUS: dict[int, tuple[str, str, str]] = {
    0: ("IBV_WC_SUCCESS", "success", ""),
    1: ("IBV_WC_LOC_LEN_ERR", "local length error", "a work request longer than the QP or MR allows"),
    2: ("IBV_WC_LOC_QP_OP_ERR", "local QP operation error",
        "the local QP was asked for something its state or caps forbid"),
    3: ("IBV_WC_LOC_EEC_OP_ERR", "local EE context operation error", ""),
    4: ("IBV_WC_LOC_PROT_ERR", "local protection error",
        "the local buffer is outside the registered MR (lkey/address)"),
    5: ("IBV_WC_WR_FLUSH_ERR", "Work Request Flushed Error", "the QP went to the error state after an earlier failure"),
    6: ("IBV_WC_MW_BIND_ERR", "memory management operation error", ""),
    7: ("IBV_WC_BAD_RESP_ERR", "bad response error", "the peer answered with an unexpected transport opcode"),
    8: ("IBV_WC_LOC_ACCESS_ERR", "local access error", "the local MR lacks the access the operation needs"),
    9: ("IBV_WC_REM_INV_REQ_ERR", "remote invalid request error",
        "the peer rejected the request (message longer than its MR, or its QP not ready)"),
    10: ("IBV_WC_REM_ACCESS_ERR", "remote access error",
         "the peer's rkey/address range is wrong or its MR lacks REMOTE_WRITE/READ"),
    11: ("IBV_WC_REM_OP_ERR", "remote operation error", "the peer could not complete the operation"),
    12: ("IBV_WC_RETRY_EXC_ERR", "transport retry counter exceeded",
         "no ACK from the peer within timeout x retry_cnt: RoCE v2 (UDP 4791) dropped on the path "
         "(firewall, ACL, PFC/ECN), a wrong peer GID or MAC, or the peer's QP is gone"),
    13: ("IBV_WC_RNR_RETRY_EXC_ERR", "RNR retry counter exceeded", "the peer posted no receive buffer in time"),
    14: ("IBV_WC_LOC_RDD_VIOL_ERR", "local RDD violation error", ""),
    15: ("IBV_WC_REM_INV_RD_REQ_ERR", "remote invalid RD request", ""),
    16: ("IBV_WC_REM_ABORT_ERR", "operation aborted", ""),
    17: ("IBV_WC_INV_EECN_ERR", "invalid EE context number", ""),
    18: ("IBV_WC_INV_EEC_STATE_ERR", "invalid EE context state", ""),
    19: ("IBV_WC_FATAL_ERR", "fatal error", "the device reported a fatal error"),
    20: ("IBV_WC_RESP_TIMEOUT_ERR", "response timeout error", "the peer did not answer in time"),
    21: ("IBV_WC_GENERAL_ERR", "general error", ""),
    22: ("IBV_WC_TM_ERR", "TM error", ""),
    23: ("IBV_WC_TM_RNDV_INCOMPLETE", "TM software rendezvous", ""),
}
NO_COMPLETION_CAUSE = ("RoCE v2 (UDP 4791) dropped on the path (firewall, ACL, PFC/ECN), the peer's MAC "
                       "is wrong (stale neighbour entry, wrong GID index), or the peer's QP is not ready")


# ---------------------------------------------------------------------------------------------- failures
def one_line(text: Any, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def human_bytes(n: int | None) -> str:
    if n is None or n < 0:
        return "unlimited"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} B"


@dataclass
class VerbsFailure:
    """What failed, where, and why, in one line (``message``) plus the fields a report needs."""

    stage: str                      # open | pd | cq | mr | qp | connect | transfer | verify (| wire)
    message: str                    # one line: what failed and the likely cause
    kind: str = "error"             # error | timeout | wc_error | mismatch | config
    errno: int | None = None
    errno_name: str | None = None   # EACCES
    strerror: str | None = None
    device: str | None = None
    node: str | None = None         # /dev/infiniband/uverbsN when knowable
    wc_status: str | None = None    # IBV_WC_RETRY_EXC_ERR
    elapsed_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VerbsFailure":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


class VerbsError(Exception):
    """Raised by the resource-building calls; ``failure`` is the typed value."""

    def __init__(self, failure: VerbsFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _errno_fields(code: int | None) -> dict[str, Any]:
    if not code or code < 0:
        return {"errno": None, "errno_name": None, "strerror": None}
    return {"errno": code, "errno_name": errno_mod.errorcode.get(code), "strerror": os.strerror(code)}


def _exc_errno(exc: BaseException) -> int | None:
    code = getattr(exc, "error_code", None)
    if isinstance(code, int) and code > 0:
        return code
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) and code > 0 else None


def _fail(stage: str, message: str, **kw: Any) -> VerbsError:
    return VerbsError(VerbsFailure(stage=stage, message=one_line(message), **kw))


def uverbs_node(device: str, sysfs: str = "/sys") -> str | None:
    """/dev/infiniband/uverbsN of an RDMA device, from /sys/class/infiniband_verbs/uverbsN/ibdev."""
    base = os.path.join(sysfs, "class", "infiniband_verbs")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return None
    for n in names:
        if not n.startswith("uverbs"):
            continue
        try:
            with open(os.path.join(base, n, "ibdev")) as f:
                if f.read().strip() == device:
                    return f"/dev/infiniband/{n}"
        except OSError:
            continue
    return None


def memlock_limits() -> tuple[int, int]:
    """RLIMIT_MEMLOCK (soft, hard) in bytes; -1 is unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    return (-1 if soft == inf else soft, -1 if hard == inf else hard)


def roce_v2_ipv4_gid_index(device: str, port: int = 1, ip: str | None = None, sysfs: str = "/sys") -> int | None:
    """The index of the RoCE v2 GID carrying an IPv4 address (``::ffff:a.b.c.d``; ``ip`` picks one), read
    from the device's own table: which index an address lands at is the kernel's choice, never a constant."""
    d = os.path.join(sysfs, "class", "infiniband", device, "ports", str(port))
    want = None
    if ip:
        want = "0000:0000:0000:0000:0000:ffff:" + "".join(f"{int(o):02x}" for o in ip.split("."))
        want = want[:-4] + ":" + want[-4:]
    try:
        entries = sorted(os.listdir(os.path.join(d, "gids")), key=lambda s: int(s) if s.isdigit() else 1 << 30)
    except OSError:
        return None
    for e in entries:
        try:
            with open(os.path.join(d, "gids", e)) as f:
                gid = f.read().strip()
            with open(os.path.join(d, "gid_attrs", "types", e)) as f:
                typ = f.read().strip()
        except OSError:
            continue  # unused entries read EINVAL
        if typ != "RoCE v2" or not gid.startswith("0000:0000:0000:0000:0000:ffff:"):
            continue
        if want is None or gid == want:
            return int(e)
    return None


# ---------------------------------------------------------------------------------------------- pyverbs
_PV: SimpleNamespace | None = None


def _pyverbs() -> SimpleNamespace:
    """The pyverbs modules (Debian's python3-pyverbs, loaded as rdmacheck.preflight.facts.verbs loads it)."""
    global _PV
    if _PV is None:
        device, err = _import_pyverbs()
        if device is None:
            raise _fail("open", err or "pyverbs not importable", kind="config")
        # the package is imported now: its submodules resolve through pyverbs.__path__, not sys.path
        mods = {n: importlib.import_module(f"pyverbs.{n}") for n in ("pd", "cq", "qp", "mr", "wr", "addr", "enums")}
        _PV = SimpleNamespace(device=device, **mods)
    return _PV


# ---------------------------------------------------------------------------------------------- params
def _check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


@dataclass
class QpParams:
    """How one side's RC QPs are set up (NCCL's names in the comments)."""

    device: str
    port: int = 1
    gid_index: int = 0
    traffic_class: int = 0          # NCCL_IB_TC (NCCL: -1 means its default, 0)
    service_level: int = 0          # NCCL_IB_SL
    mtu: int | None = None          # path MTU cap in bytes; None: the smaller active MTU of the two ports
    timeout: int = 20               # NCCL_IB_TIMEOUT: local ACK timeout 4.096 us x 2^timeout
    retry_cnt: int = 7              # NCCL_IB_RETRY_CNT
    rnr_retry: int = 7
    min_rnr_timer: int = 12

    def validate(self) -> "QpParams":
        if not isinstance(self.device, str) or not self.device or len(self.device) > 64:
            raise ValueError(f"device must be a non-empty name, got {self.device!r}")
        _check_int("port", self.port, 1, 255)
        _check_int("gid_index", self.gid_index, 0, 65535)
        _check_int("traffic_class", self.traffic_class, 0, 255)
        _check_int("service_level", self.service_level, 0, 15)
        _check_int("timeout", self.timeout, 0, 31)
        _check_int("retry_cnt", self.retry_cnt, 0, 7)
        _check_int("rnr_retry", self.rnr_retry, 0, 7)
        _check_int("min_rnr_timer", self.min_rnr_timer, 0, 31)
        if self.mtu is not None and self.mtu not in MTU_ENUM:
            raise ValueError(f"mtu must be one of {sorted(MTU_ENUM)} bytes, got {self.mtu!r}")
        return self

    @classmethod
    def from_env(cls, device: str, gid_index: int, port: int = 1, env: dict[str, str] | None = None) -> "QpParams":
        """The values NCCL would use from NCCL_IB_TC/SL/TIMEOUT/RETRY_CNT (unset or -1: NCCL's default)."""
        env = os.environ if env is None else env

        def get(name: str, default: int) -> int:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                v = int(raw, 0)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not an integer") from None
            return default if v < 0 else v

        return cls(device=device, port=port, gid_index=gid_index,
                   traffic_class=get("NCCL_IB_TC", 0), service_level=get("NCCL_IB_SL", 0),
                   timeout=get("NCCL_IB_TIMEOUT", 20), retry_cnt=get("NCCL_IB_RETRY_CNT", 7)).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QpParams":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown QpParams fields: {sorted(extra)}")
        return cls(**d).validate()


@dataclass
class EndpointInfo:
    """What the peer needs to connect to this endpoint and write into its memory."""

    device: str
    port: int
    gid_index: int
    gid: str            # 32 lowercase hex characters (the 16 GID bytes)
    qpns: list[int]
    psn: int
    rkey: int
    addr: int
    mr_size: int
    mtu: int            # active MTU of the port, bytes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "EndpointInfo":
        """Strict: every field present, typed and in range (the peer's info crosses a network)."""
        if not isinstance(d, dict):
            raise ValueError("endpoint info must be an object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        extra = sorted(set(d) - set(names))
        if missing or extra:
            raise ValueError(f"endpoint info: missing {missing} unknown {extra}".replace(" missing [] ", " ")
                             .replace(" unknown []", ""))
        dev = d["device"]
        if not isinstance(dev, str) or not 0 < len(dev) <= 64 or not all(c.isalnum() or c in "_.-" for c in dev):
            raise ValueError(f"device {str(dev)[:70]!r} is not an RDMA device name")
        gid = d["gid"]
        if not isinstance(gid, str) or len(gid) != 32 or any(c not in "0123456789abcdef" for c in gid):
            raise ValueError(f"gid must be 32 lowercase hex characters, got {str(gid)[:40]!r}")
        qpns = d["qpns"]
        if not isinstance(qpns, list) or not 1 <= len(qpns) <= 64:
            raise ValueError("qpns must be a list of 1 to 64 QP numbers")
        for q in qpns:
            _check_int("qpn", q, 1, U24)
        if d["mtu"] not in MTU_ENUM or isinstance(d["mtu"], bool):
            raise ValueError(f"mtu must be one of {sorted(MTU_ENUM)}, got {d['mtu']!r}")
        return cls(device=dev, port=_check_int("port", d["port"], 1, 255),
                   gid_index=_check_int("gid_index", d["gid_index"], 0, 65535), gid=gid, qpns=list(qpns),
                   psn=_check_int("psn", d["psn"], 0, U24), rkey=_check_int("rkey", d["rkey"], 0, (1 << 32) - 1),
                   addr=_check_int("addr", d["addr"], 0, (1 << 64) - 1),
                   mr_size=_check_int("mr_size", d["mr_size"], 1, 1 << 40), mtu=d["mtu"])


# ---------------------------------------------------------------------------------------------- patterns
_BLOCK = 64 * KiB
_ROT = _BLOCK + 1          # 65537 is prime: the block rotations below are all distinct


def pattern_seed(run: str, size: int, slot: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{run}:{size}:{slot}".encode(), digest_size=8).digest(), "big")


def pattern(seed: int, length: int) -> bytes:
    """Deterministic pseudo-random bytes: each 64 KiB block is a different rotation of one seeded block,
    so a block landing at the wrong offset, a short write and stale content all compare unequal."""
    base = random.Random(seed).randbytes(_ROT)
    base2 = base + base
    blocks, n, k = [], 0, 0
    while n < length:
        r = (k * 7919) % _ROT
        blocks.append(base2[r:r + _BLOCK])
        n += _BLOCK
        k += 1
    return b"".join(blocks)[:length]


def new_run_id() -> str:
    return os.urandom(8).hex()


# ---------------------------------------------------------------------------------------------- endpoint
# The software RDMA drivers, by the vendor_id they report (the kernel's RXE_VENDOR_ID and SIW_VENDOR_ID).
# They get QPs without inline data: an inline write costs them more than one read from the MR (rxe, 8 B
# ping-pong: 50-53 us one way with inline, 47-50 without, same boot), and ib_write_lat turns inline off on
# every device it does not recognise, these two included.
SOFT_VENDOR_IDS = {0xFFFFFF: "rxe", 0x626D74: "siw"}


class Endpoint:
    """One side: device context, PD, CQ, ``num_qps`` RC QPs in INIT, one MR of ``mr_size`` bytes.

    Raises :class:`VerbsError` (stage open/pd/cq/mr/qp) and releases whatever it had opened.
    ``buf`` is a writable memoryview of the registered memory.
    """

    def __init__(self, params: QpParams, mr_size: int, num_qps: int = 1, max_send_wr: int = 32,
                 max_inline: int = 0, sysfs: str = "/sys") -> None:
        params.validate()
        _check_int("num_qps", num_qps, 1, 64)
        _check_int("mr_size", mr_size, 1, 1 << 40)
        self.params = params
        self.mr_size = mr_size
        self.num_qps = num_qps
        self.max_send_wr = max_send_wr
        self.max_inline = 0
        self.vendor_id = None
        self.node = uverbs_node(params.device, sysfs)
        self.psn = random.SystemRandom().randrange(0, U24 + 1)
        self.ctx = self.pd = self.cq = self.mr = self._mm = None
        self.buf: memoryview | None = None
        self.addr = 0
        self.qps: list[Any] = []
        self.remote: EndpointInfo | None = None
        self.path_mtu: int | None = None
        self.active_mtu = 0
        self.gid = ""
        try:
            self._open(sysfs)
            self._alloc(mr_size, num_qps, max_send_wr, max_inline)
        except BaseException:
            self.close()
            raise

    # -- building
    def _open(self, sysfs: str) -> None:
        pv = _pyverbs()
        p = self.params
        try:
            self.ctx = pv.device.Context(name=p.device)
        except Exception as e:  # PyverbsRDMAError (errno), PyverbsUserError (no such device)
            code = _exc_errno(e)
            if code is None and self.node:
                code = _probe_node(self.node)
            present = _device_names(sysfs)
            if code is None and p.device not in present:
                code = errno_mod.ENODEV
            raise _fail("open", _open_message(p.device, self.node, code, e, present), device=p.device,
                        node=self.node, **_errno_fields(code)) from None
        try:
            pa = self.ctx.query_port(p.port)
        except Exception as e:
            raise _fail("open", f"query_port({p.port}) on {p.device} failed: {one_line(e)}", device=p.device,
                        node=self.node, **_errno_fields(_exc_errno(e))) from None
        if int(pa.state) != PORT_ACTIVE:
            raise _fail("open", f"port {p.port} of {p.device} is not ACTIVE (state {int(pa.state)}): link down or "
                        "no carrier on its netdev", kind="config", device=p.device, node=self.node)
        self.active_mtu = IBV_MTU.get(int(pa.active_mtu), 0)
        try:
            self.vendor_id: int | None = int(self.ctx.query_device().vendor_id)
        except Exception:  # only the inline choice reads it (see SOFT_VENDOR_IDS)
            self.vendor_id = None
        if p.gid_index >= int(pa.gid_tbl_len):
            raise _fail("open", f"GID index {p.gid_index} is beyond {p.device} port {p.port}'s table of "
                        f"{int(pa.gid_tbl_len)}", kind="config", device=p.device, node=self.node)
        try:
            gid = self.ctx.query_gid(p.port, p.gid_index).gid
        except Exception as e:
            raise _fail("open", f"query_gid({p.port}, {p.gid_index}) on {p.device} failed: {one_line(e)}",
                        device=p.device, node=self.node, **_errno_fields(_exc_errno(e))) from None
        self.gid = gid.replace(":", "").lower()
        if int(self.gid, 16) == 0:
            raise _fail("open", f"GID index {p.gid_index} of {p.device} port {p.port} is empty (all zeros): no "
                        "address on the netdev for it; pick the RoCE v2 IPv4 entry of the port's GID table",
                        kind="config", device=p.device, node=self.node)

    def _alloc(self, mr_size: int, num_qps: int, max_send_wr: int, max_inline: int) -> None:
        pv = _pyverbs()
        p, e = self.params, pv.enums
        try:
            self.pd = pv.pd.PD(self.ctx)
        except Exception as ex:
            raise _fail("pd", f"ibv_alloc_pd on {p.device} failed: {one_line(ex)}", device=p.device, node=self.node,
                        **_errno_fields(_exc_errno(ex))) from None
        cqe = num_qps * (max_send_wr + 4) + 16
        try:
            self.cq = pv.cq.CQ(self.ctx, cqe, None, None, 0)
        except Exception as ex:
            raise _fail("cq", f"ibv_create_cq({cqe}) on {p.device} failed: {one_line(ex)}", device=p.device,
                        node=self.node, **_errno_fields(_exc_errno(ex))) from None
        self._register(mr_size)
        for _ in range(num_qps):
            qp = self._create_qp(max_send_wr, 0 if self.vendor_id in SOFT_VENDOR_IDS else max_inline)
            self.qps.append(qp)

    def _register(self, size: int) -> None:
        pv = _pyverbs()
        p, e = self.params, pv.enums
        try:
            self._mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError, OverflowError) as ex:
            raise _fail("mr", f"allocating {human_bytes(size)} for the MR failed: {one_line(ex)}", device=p.device,
                        node=self.node, detail={"mr_size": size}, **_errno_fields(_exc_errno(ex))) from None
        import ctypes

        anchor = ctypes.c_char.from_buffer(self._mm)
        self.addr = ctypes.addressof(anchor)
        del anchor  # the address stays valid while the mapping lives; no export pins the mmap object
        access = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_REMOTE_READ
        try:
            self.mr = pv.mr.MR(self.pd, size, access, address=self.addr)
        except Exception as ex:
            code = _exc_errno(ex)
            soft, hard = memlock_limits()
            why = ""
            if code in (errno_mod.ENOMEM, errno_mod.EPERM, errno_mod.EAGAIN, None) and 0 <= soft < size:
                why = (f": RLIMIT_MEMLOCK {human_bytes(soft)} (hard {human_bytes(hard)}) is below the "
                       f"{human_bytes(size)} to pin; raise it (ulimit -l unlimited, docker --ulimit memlock=-1)")
            raise _fail("mr", f"registering a {human_bytes(size)} ({size} B) MR on {p.device} failed "
                        f"({_errno_text(code)}){why}; RLIMIT_MEMLOCK soft {human_bytes(soft)} hard {human_bytes(hard)}",
                        device=p.device, node=self.node,
                        detail={"mr_size": size, "memlock_soft": soft, "memlock_hard": hard},
                        **_errno_fields(code)) from None
        self.buf = memoryview(self._mm)

    def _create_qp(self, max_send_wr: int, max_inline: int) -> Any:
        pv = _pyverbs()
        p, e = self.params, pv.enums
        last: Exception | None = None
        for inline in dict.fromkeys((max_inline, 0)):  # an HCA without that much inline: retry without
            cap = pv.qp.QPCap(max_send_wr=max_send_wr, max_recv_wr=4, max_send_sge=1, max_recv_sge=1,
                              max_inline_data=inline)
            init = pv.qp.QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap, sq_sig_all=0)
            try:
                qp = pv.qp.QP(self.pd, init)
            except Exception as ex:
                last = ex
                continue
            self.max_inline = inline
            break
        else:
            raise _fail("qp", f"ibv_create_qp (RC, {max_send_wr} send WRs) on {p.device} failed: {one_line(last)}",
                        device=p.device, node=self.node, **_errno_fields(_exc_errno(last))) from None
        attr = pv.qp.QPAttr(qp_state=e.IBV_QPS_INIT)
        attr.pkey_index = 0
        attr.port_num = p.port
        attr.qp_access_flags = e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_REMOTE_READ | e.IBV_ACCESS_LOCAL_WRITE
        mask = e.IBV_QP_STATE | e.IBV_QP_PKEY_INDEX | e.IBV_QP_PORT | e.IBV_QP_ACCESS_FLAGS
        try:
            qp.modify(attr, mask)
        except Exception as ex:
            qp.close()
            raise _fail("qp", f"QP RESET->INIT on {p.device} port {p.port} failed: {one_line(ex)}", device=p.device,
                        node=self.node, **_errno_fields(_exc_errno(ex))) from None
        return qp

    # -- what the peer needs
    def info(self) -> dict[str, Any]:
        """qpns, psn, gid (hex), rkey, addr, mr_size, mtu (active), device/port/gid_index: a plain dict."""
        return EndpointInfo(device=self.params.device, port=self.params.port, gid_index=self.params.gid_index,
                            gid=self.gid, qpns=[int(q.qp_num) for q in self.qps], psn=self.psn,
                            rkey=int(self.mr.rkey), addr=self.addr, mr_size=self.mr_size,
                            mtu=self.active_mtu).to_dict()

    # -- content
    def fill(self, offset: int, data: bytes) -> None:
        self.buf[offset:offset + len(data)] = data

    def check(self, offset: int, expected: bytes) -> int | None:
        """None when the buffer at ``offset`` holds ``expected``, else the first differing offset."""
        got = bytes(self.buf[offset:offset + len(expected)])
        if got == expected:
            return None
        for i in range(0, len(expected), _BLOCK):
            if got[i:i + _BLOCK] != expected[i:i + _BLOCK]:
                a, b = got[i:i + _BLOCK], expected[i:i + _BLOCK]
                return offset + i + next((j for j in range(len(b)) if a[j] != b[j]), 0)
        return offset

    def check_slots(self, run: str, size: int, slots: int, base: int = 0) -> tuple[bool, str | None]:
        """Verify what :func:`write_bandwidth` wrote here: slot s at ``base + s*size`` holds its pattern."""
        for s in range(slots):
            off = base + s * size
            if off + size > self.mr_size:
                return False, f"slot {s} of {size} B lies beyond the {self.mr_size} B MR"
            bad = self.check(off, pattern(pattern_seed(run, size, s), size))
            if bad is not None:
                return False, (f"content mismatch in slot {s} of {human_bytes(size)} messages at byte {bad - off} "
                               f"(MR offset {bad})")
        return True, None

    def to_error(self) -> None:
        """Move every QP to ERR: the HCA flushes what is in flight (nothing stays posted at close)."""
        try:
            pv = _pyverbs()
        except VerbsError:
            return
        for qp in self.qps:
            try:
                qp.modify(pv.qp.QPAttr(qp_state=pv.enums.IBV_QPS_ERR), pv.enums.IBV_QP_STATE)
            except Exception:
                pass

    def drain(self, seconds: float = 0.5) -> int:
        """Reap completions (flushed ones after :meth:`to_error`) for at most ``seconds``."""
        n, end = 0, time.monotonic() + seconds
        while self.cq is not None and time.monotonic() < end:
            try:
                got, _ = self.cq.poll(16)
            except Exception:
                break
            if not got:
                break
            n += got
        return n

    def close(self) -> None:
        for qp in self.qps:
            try:
                qp.close()
            except Exception:
                pass
        self.qps = []
        if self.mr is not None:
            try:
                self.mr.close()
            except Exception:
                pass
            self.mr = None
        if self.buf is not None:
            self.buf.release()
            self.buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except Exception:
                pass
            self._mm = None
        for name in ("cq", "pd", "ctx"):
            obj = getattr(self, name)
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
                setattr(self, name, None)

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _device_names(sysfs: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(sysfs, "class", "infiniband")))
    except OSError:
        return []


def _probe_node(node: str) -> int | None:
    """The errno opening the uverbs node gives this process (what libibverbs' open got), or None."""
    try:
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return e.errno
    os.close(fd)
    return None


def _errno_text(code: int | None) -> str:
    if not code:
        return "no errno"
    return f"errno {code} {errno_mod.errorcode.get(code, '?')}: {os.strerror(code)}"


def _open_message(device: str, node: str | None, code: int | None, exc: BaseException, present: list[str]) -> str:
    where = node or "/dev/infiniband/uverbs*"
    head = f"opening {device} ({where}) failed: {_errno_text(code)}"
    if code == errno_mod.EACCES:
        why = (f"this process may not open {where}: check its mode and group (udev rules) on the host; in a "
               "container pass it with --device (or /dev/infiniband) and allow it in the device cgroup")
    elif code == errno_mod.EPERM:
        why = f"the device cgroup denies {where}: docker --device {where} or --device-cgroup-rule"
    elif code in (errno_mod.ENOENT, errno_mod.ENXIO):
        why = (f"{where} is missing: ib_uverbs not loaded, or a container without /dev/infiniband "
               "(--device /dev/infiniband)")
    elif code == errno_mod.ENODEV:
        why = f"no RDMA device named {device} (present: {', '.join(present) or 'none'})"
    else:
        why = one_line(exc, 200)
    return f"{head}: {why}"


# ---------------------------------------------------------------------------------------------- connect
def connect(local: Endpoint, remote: dict[str, Any] | EndpointInfo) -> int:
    """Bring every local QP to RTS against the peer's QPs (QP i to remote QP i); returns the path MTU.

    Raises :class:`VerbsError` (stage connect)."""
    pv = _pyverbs()
    e = pv.enums
    p = local.params
    try:
        r = remote if isinstance(remote, EndpointInfo) else EndpointInfo.from_dict(remote)
    except ValueError as ex:
        raise _fail("connect", f"peer info rejected: {ex}", kind="config", device=p.device) from None
    if len(r.qpns) != len(local.qps):
        raise _fail("connect", f"peer has {len(r.qpns)} QPs, we have {len(local.qps)}", kind="config", device=p.device)
    mtu = min(x for x in (local.active_mtu, r.mtu, p.mtu) if x)
    gid = pv.addr.GID()
    gid.gid = ":".join(r.gid[i:i + 4] for i in range(0, 32, 4))
    for i, qp in enumerate(local.qps):
        gr = pv.addr.GlobalRoute(dgid=gid, flow_label=0, sgid_index=p.gid_index, hop_limit=255,
                                 traffic_class=p.traffic_class)
        ah = pv.addr.AHAttr(gr=gr, is_global=1, port_num=p.port, sl=p.service_level, src_path_bits=0)
        rtr = pv.qp.QPAttr(qp_state=e.IBV_QPS_RTR)
        rtr.ah_attr = ah
        rtr.path_mtu = MTU_ENUM[mtu]
        rtr.dest_qp_num = r.qpns[i]
        rtr.rq_psn = r.psn
        rtr.max_dest_rd_atomic = 1
        rtr.min_rnr_timer = p.min_rnr_timer
        mask = (e.IBV_QP_STATE | e.IBV_QP_AV | e.IBV_QP_PATH_MTU | e.IBV_QP_DEST_QPN | e.IBV_QP_RQ_PSN
                | e.IBV_QP_MAX_DEST_RD_ATOMIC | e.IBV_QP_MIN_RNR_TIMER)
        try:
            qp.modify(rtr, mask)
        except Exception as ex:
            code = _exc_errno(ex)
            hint = ""
            if code in (errno_mod.ETIMEDOUT, errno_mod.EHOSTUNREACH, errno_mod.ENETUNREACH, errno_mod.ENODATA):
                hint = ": the kernel could not resolve the peer GID's MAC (no route or neighbour on this netdev)"
            elif code == errno_mod.EINVAL:
                hint = f": GID index {p.gid_index}, MTU {mtu} or the peer's GID {r.gid} rejected by the device"
            raise _fail("connect", f"QP {int(qp.qp_num)} INIT->RTR to peer QP {r.qpns[i]} GID {r.gid} failed "
                        f"({_errno_text(code)}){hint}", device=p.device, node=local.node,
                        **_errno_fields(code)) from None
        rts = pv.qp.QPAttr(qp_state=e.IBV_QPS_RTS)
        rts.timeout = p.timeout
        rts.retry_cnt = p.retry_cnt
        rts.rnr_retry = p.rnr_retry
        rts.sq_psn = local.psn
        rts.max_rd_atomic = 1
        mask = (e.IBV_QP_STATE | e.IBV_QP_TIMEOUT | e.IBV_QP_RETRY_CNT | e.IBV_QP_RNR_RETRY | e.IBV_QP_SQ_PSN
                | e.IBV_QP_MAX_QP_RD_ATOMIC)
        try:
            qp.modify(rts, mask)
        except Exception as ex:
            code = _exc_errno(ex)
            raise _fail("connect", f"QP {int(qp.qp_num)} RTR->RTS failed ({_errno_text(code)})", device=p.device,
                        node=local.node, **_errno_fields(code)) from None
    local.remote = r
    local.path_mtu = mtu
    return mtu


# ---------------------------------------------------------------------------------------------- transfers
def _wc_failure(wc: Any, stage: str, what: str, local: Endpoint, elapsed: float) -> VerbsError:
    st = int(wc.status)
    name, text, cause = WC_STATUS.get(st, (f"IBV_WC_STATUS_{st}", "unknown status", ""))
    msg = f"{what}: completion with error {name} ({text})" + (f": {cause}" if cause else "")
    return _fail(stage, msg, kind="wc_error", wc_status=name, device=local.params.device, node=local.node,
                 elapsed_s=round(elapsed, 3), detail={"vendor_err": int(wc.vendor_err), "qp_num": int(wc.qp_num)})


def _timeout_failure(stage: str, what: str, local: Endpoint, waited: float, elapsed: float) -> VerbsError:
    return _fail(stage, f"{what}: no completion within {waited:.1f} s: {NO_COMPLETION_CAUSE}", kind="timeout",
                 device=local.params.device, node=local.node, elapsed_s=round(elapsed, 3),
                 detail={"waited_s": round(waited, 3), "qp_timeout": local.params.timeout,
                         "retry_cnt": local.params.retry_cnt})


def _make_wr(local: Endpoint, opcode: int, wr_id: int, local_off: int, length: int, remote_addr: int, rkey: int,
             signaled: bool = True, inline: bool = False) -> Any:
    pv = _pyverbs()
    e = pv.enums
    sge = pv.wr.SGE(local.addr + local_off, length, local.mr.lkey)
    flags = (e.IBV_SEND_SIGNALED if signaled else 0) | (e.IBV_SEND_INLINE if inline else 0)
    wr = pv.wr.SendWR(wr_id=wr_id, opcode=opcode, num_sge=1, sg=[sge], send_flags=flags)
    wr.set_wr_rdma(rkey, remote_addr)
    return wr


def _pump(local: Endpoint, lanes: int, next_wr: Callable[[int], Any], stall_s: float, deadline: float | None,
          stage: str, what: str) -> tuple[int, float, float]:
    """Keep one WR per lane in flight (lane i on QP i % nqp, wr_id = lane); when lane i completes ask
    ``next_wr(i)`` for its next WR (None: the lane is done).  Returns (completions, t_first_post, t_last).

    Bounded: no completion within ``stall_s``, or ``deadline`` (time.monotonic) passed, ends it with a
    typed timeout; an error completion ends it with the status name.  Either way the QPs go to ERR first.
    """
    qps, cq = local.qps, local.cq
    nqp = len(qps)
    inflight = done = 0
    t_start = time.monotonic()
    t0 = time.perf_counter()
    try:
        for lane in range(lanes):
            wr = next_wr(lane)
            if wr is None:
                continue
            qps[lane % nqp].post_send(wr)
            inflight += 1
        last = time.monotonic()
        empty = 0
        while inflight:
            n, wcs = cq.poll(16)
            if not n:
                empty += 1
                if empty & 0x3F:
                    continue  # the clock only every 64 empty polls: a read costs ~7 us under emulation
                now = time.monotonic()
                if now - last > stall_s:
                    raise _timeout_failure(stage, what, local, now - last, now - t_start)
                if deadline is not None and now > deadline:
                    raise _timeout_failure(stage, what + " (overall deadline)", local, now - last, now - t_start)
                continue
            empty = 0
            last = time.monotonic()
            for wc in wcs:
                if int(wc.status) != 0:
                    raise _wc_failure(wc, stage, what, local, last - t_start)
                inflight -= 1
                done += 1
                lane = int(wc.wr_id)
                wr = next_wr(lane)
                if wr is not None:
                    qps[lane % nqp].post_send(wr)
                    inflight += 1
        return done, t0, time.perf_counter()
    except VerbsError:
        local.to_error()
        local.drain()
        raise
    except Exception as ex:  # post_send refused (queue full, QP in error)
        local.to_error()
        local.drain()
        raise _fail(stage, f"{what}: {one_line(ex)}", device=local.params.device, node=local.node,
                    **_errno_fields(_exc_errno(ex))) from None


@dataclass
class BandwidthPoint:
    size: int
    messages: int
    bytes: int
    seconds: float
    gb_per_s: float                  # 1e9 bytes per second
    slots: int
    verified: bool | None = None     # None: not verified
    verify_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BandwidthPoint":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass
class BandwidthResult:
    ok: bool
    points: list[BandwidthPoint]
    num_qps: int
    depth: int
    run: str
    failure: VerbsFailure | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failure"] = self.failure.to_dict() if self.failure else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BandwidthResult":
        return cls(ok=d["ok"], points=[BandwidthPoint.from_dict(p) for p in d.get("points", [])],
                   num_qps=d["num_qps"], depth=d["depth"], run=d["run"],
                   failure=VerbsFailure.from_dict(d["failure"]) if d.get("failure") else None,
                   elapsed_s=d.get("elapsed_s", 0.0))


Verifier = Callable[[dict[str, Any]], "tuple[bool, str | None]"]


def write_bandwidth(local: Endpoint, sizes: Sequence[int] = DEFAULT_BW_SIZES, *, count: int | None = None,
                    duration_s: float | None = None, depth: int = 4, slots_per_qp: int = 1, stall_s: float = 2.0,
                    deadline_s: float | None = None, verify: Verifier | None = None,
                    run: str | None = None) -> BandwidthResult:
    """RDMA WRITE from ``local`` into the connected peer's MR: per size, ``depth`` WRs in flight on each QP,
    ``count`` messages or for ``duration_s`` seconds (default 200 messages).

    Content: the MRs hold ``slots_per_qp`` message-sized slots per QP (1: as perftest, each QP sends one
    buffer over and over; the working set stays small, which matters under emulation where every page
    touched costs a software TLB walk).  Every WR on slot s copies source slot s to destination slot s,
    and slot s holds the seeded pattern (run, size, s), so the destination's final content is
    deterministic whatever the completion order; ``verify({"run", "size", "slots"})`` (the receiver's
    :meth:`Endpoint.check_slots`: in this process for a loopback, over the side channel for two processes)
    proves every slot landed intact.  GB/s is 1e9 bytes per second over first post to last completion.
    """
    r = local.remote
    if r is None:
        raise ValueError("connect() the endpoint first")
    run = run or new_run_id()
    depth = max(1, min(depth, local.max_send_wr))
    t_begin = time.monotonic()
    deadline = t_begin + deadline_s if deadline_s else None
    if count is None and duration_s is None:
        count = 200
    res = BandwidthResult(ok=True, points=[], num_qps=len(local.qps), depth=depth, run=run)
    e = _pyverbs().enums
    nqp = len(local.qps)
    for size in sizes:
        slots = min(nqp * max(1, slots_per_qp), local.mr_size // size, r.mr_size // size)
        lanes = nqp * depth
        if count is not None:
            slots, lanes = min(slots, count), min(lanes, count)
        if slots < 1:
            res.ok = False
            res.failure = VerbsFailure(stage="transfer", kind="config", device=local.params.device,
                                       message=f"a {human_bytes(size)} message does not fit the MRs "
                                               f"({human_bytes(local.mr_size)} here, "
                                               f"{human_bytes(r.mr_size)} at the peer)")
            break
        for s in range(slots):
            local.fill(s * size, pattern(pattern_seed(run, size, s), size))
        # lane i: its own WR (wr_id i) on QP i % nqp, copying slot i % slots
        wrs = [_make_wr(local, e.IBV_WR_RDMA_WRITE, i, (i % slots) * size, size, r.addr + (i % slots) * size, r.rkey)
               for i in range(lanes)]
        posted = [0]
        until = [None]

        def next_wr(lane: int, wrs=wrs, posted=posted, until=until) -> Any:
            if count is not None and posted[0] >= count:
                return None
            if until[0] is not None and time.monotonic() >= until[0]:
                return None
            posted[0] += 1
            return wrs[lane]

        if duration_s is not None:
            until[0] = time.monotonic() + duration_s
        try:
            done, t0, t1 = _pump(local, lanes, next_wr, stall_s, deadline, "transfer",
                                 f"RDMA WRITE of {human_bytes(size)} messages to {r.device} QPs {r.qpns}")
        except VerbsError as ex:
            res.ok = False
            res.failure = ex.failure
            break
        secs = max(t1 - t0, 1e-9)
        pt = BandwidthPoint(size=size, messages=done, bytes=done * size, seconds=round(secs, 6),
                            gb_per_s=round(done * size / secs / 1e9, 6), slots=slots)
        if verify is not None:
            try:
                ok, err = verify({"run": run, "size": size, "slots": slots})
            except Exception as ex:  # the side channel failed: a verify that did not happen
                ok, err = False, f"verification did not happen: {one_line(ex)}"
            pt.verified, pt.verify_error = ok, err
            if not ok:
                res.points.append(pt)
                res.ok = False
                res.failure = VerbsFailure(stage="verify", kind="mismatch", device=r.device,
                                           message=one_line(f"{human_bytes(size)} messages: {err}"))
                break
        res.points.append(pt)
    res.elapsed_s = round(time.monotonic() - t_begin, 3)
    return res


# ---------------------------------------------------------------------------------------------- latency
@dataclass
class LatencyPoint:
    size: int
    iters: int
    p50_us: float           # one-way: half the round trip, as ib_write_lat reports it
    p99_us: float
    min_us: float
    max_us: float
    avg_us: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyPoint":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass
class LatencyResult:
    ok: bool
    points: list[LatencyPoint]
    initiator: bool
    failure: VerbsFailure | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failure"] = self.failure.to_dict() if self.failure else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyResult":
        return cls(ok=d["ok"], points=[LatencyPoint.from_dict(p) for p in d.get("points", [])],
                   initiator=d["initiator"], failure=VerbsFailure.from_dict(d["failure"]) if d.get("failure") else None,
                   elapsed_s=d.get("elapsed_s", 0.0))


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def latency_reset(local: Endpoint, max_size: int) -> None:
    """Zero the first ``max_size`` bytes of both halves of the MR before a ping-pong series (ascending sizes).

    A size's poll byte (size - 1) is then touched only by that size's own writes: a smaller size's writes
    end below it.  The responder calls this before it tells the initiator it is ready."""
    half = local.mr_size // 2
    n = min(max_size, half)
    local.buf[0:n] = bytes(n)
    local.buf[half:half + n] = bytes(n)


def write_latency(local: Endpoint, sizes: Sequence[int] = DEFAULT_LAT_SIZES, iters: int = 1000, *,
                  initiator: bool = True, stall_s: float = 2.0, start_s: float = 10.0,
                  deadline_s: float | None = None, reset: bool = True) -> LatencyResult:
    """RDMA WRITE ping-pong on QP 0, as ib_write_lat: each side polls the last byte of the receive half of its
    MR (offset 0) for the peer's write, then writes ``size`` bytes from its send half (offset mr_size/2) into
    the peer's receive half.  The initiator times each post; one-way latency = round trip / 2.

    Both sides call it with the same sizes and iterations (the responder with ``initiator=False``, after
    :func:`latency_reset` and before it tells the initiator to start; sizes run in ascending order).  Every
    wait is bounded: ``start_s`` for the first message of a size, ``stall_s`` for each later one, and the
    whole call by ``deadline_s`` (a peer answering just in time cannot stretch it: the probe's server sets it).
    """
    r = local.remote
    if r is None:
        raise ValueError("connect() the endpoint first")
    sizes = sorted(sizes)
    e = _pyverbs().enums
    qp, cq = local.qps[0], local.cq
    half, rhalf = local.mr_size // 2, r.mr_size // 2
    res = LatencyResult(ok=True, points=[], initiator=initiator)
    t_begin = time.monotonic()
    hard_end = t_begin + deadline_s if deadline_s else float("inf")
    every = max(1, min(16, local.max_send_wr // 2))
    buf = local.buf
    if reset and initiator and sizes:
        latency_reset(local, sizes[-1])
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for size in sizes:
            if size > half or size > rhalf:
                res.ok = False
                res.failure = VerbsFailure(stage="transfer", kind="config", device=local.params.device,
                                           message=f"a {size} B ping-pong needs {2 * size} B MRs on both sides")
                break
            inline = size <= local.max_inline
            wr_sig = _make_wr(local, e.IBV_WR_RDMA_WRITE, 1, half, size, r.addr, r.rkey, True, inline)
            wr_uns = _make_wr(local, e.IBV_WR_RDMA_WRITE, 0, half, size, r.addr, r.rkey, False, inline)
            poll_at, post_at = size - 1, half + size - 1
            stamps: list[int] = []
            what = f"RDMA WRITE ping-pong of {size} B with {r.device} QP {r.qpns[0]}"
            post, stamp = qp.post_send, stamps.append
            clock = time.perf_counter_ns
            vals = [n & 0xFF for n in range(1, iters + 1)]
            try:
                # Under emulation every Python operation costs about a microsecond and lands in the round trip,
                # so the loop does as little as it can: values precomputed, chunks of `every` messages of which
                # only the last is signaled (its completion is reaped once per chunk), the spin entered only
                # when the answer is not there yet and reading the clock only every 1024 spins, one clock read
                # per message on the initiator for its time stamp, taken right after the post: the interval
                # between two stamps is one round trip either way, and the read (a syscall with the guest's
                # hpet clock) then overlaps the flight instead of delaying the next post.
                # An inline write copies its bytes at the post, so with inline sends each side writes its next
                # message's byte while it waits (the initiator during the flight, the responder before the
                # ping lands) and posts the moment the answer is seen.  Without inline the adapter reads the
                # buffer after the post, so the byte is written just before it, as ib_write_lat does.
                limit, pending = start_s, False
                wait = (buf, poll_at, hard_end, local, cq, what, t_begin)
                if inline and initiator and vals:
                    buf[post_at] = vals[0]
                for pos in range(0, iters, every):
                    chunk = vals[pos:pos + every]
                    if pending:
                        _reap(cq, local, what, stall_s, t_begin)
                    if initiator:
                        (_ping_inline if inline else _ping)(chunk, post, wr_uns, wr_sig, stamp, clock, buf,
                                                            post_at, poll_at, limit, wait)
                    else:
                        (_pong_inline if inline else _pong)(chunk, post, wr_uns, wr_sig, buf, post_at, poll_at,
                                                            limit, wait)
                    pending = True
                    limit = stall_s   # start_s covers the first chunk: the peer may start a little later
                if pending:
                    _reap(cq, local, what, stall_s, t_begin)
            except VerbsError as ex:
                local.to_error()
                local.drain()
                res.ok = False
                res.failure = ex.failure
                break
            except Exception as ex:
                local.to_error()
                local.drain()
                res.ok = False
                res.failure = VerbsFailure(stage="transfer", message=one_line(f"{what}: {ex}"),
                                           device=local.params.device, **_errno_fields(_exc_errno(ex)))
                break
            if initiator and iters >= 2:
                lat = sorted((stamps[i + 1] - stamps[i]) / 2000.0 for i in range(iters - 1))
                res.points.append(LatencyPoint(size=size, iters=iters, p50_us=round(_percentile(lat, 0.5), 3),
                                               p99_us=round(_percentile(lat, 0.99), 3), min_us=round(lat[0], 3),
                                               max_us=round(lat[-1], 3), avg_us=round(sum(lat) / len(lat), 3)))
    finally:
        if gc_was:
            gc.enable()
    res.elapsed_s = round(time.monotonic() - t_begin, 3)
    return res


_SPINS = range(1024)


# One chunk of the ping-pong (write_latency), one function per side and send kind: a call per chunk of up to
# 16 messages, and inside it only what each message needs.  The last message of a chunk is the signaled one.
# The first 1024 spins of each wait are written out in place (``for ... else``) rather than called: a seen
# answer then goes straight to the post, not through a function's return first (under TCG each costs
# microseconds of the peer's reaction, which benchmarks/latency_trace.py measures); only a longer wait
# calls _spin, which watches the clock.
def _ping_inline(chunk, post, wr_uns, wr_sig, stamp, clock, buf, post_at, poll_at, limit, wait) -> None:
    """Initiator, inline sends: buf[post_at] already holds chunk[0]; the next byte is written in flight."""
    for v in chunk[:-1]:
        post(wr_uns)
        stamp(clock())
        buf[post_at] = (v + 1) & 0xFF   # the next value of vals
        for _ in _SPINS:
            if buf[poll_at] == v:
                break
        else:
            _spin(v, limit, *wait)
    v = chunk[-1]
    post(wr_sig)
    stamp(clock())
    buf[post_at] = (v + 1) & 0xFF
    for _ in _SPINS:
        if buf[poll_at] == v:
            break
    else:
        _spin(v, limit, *wait)


def _ping(chunk, post, wr_uns, wr_sig, stamp, clock, buf, post_at, poll_at, limit, wait) -> None:
    """Initiator, sends the adapter reads from the MR: the byte is written just before each post."""
    for v in chunk[:-1]:
        buf[post_at] = v
        post(wr_uns)
        stamp(clock())
        for _ in _SPINS:
            if buf[poll_at] == v:
                break
        else:
            _spin(v, limit, *wait)
    v = chunk[-1]
    buf[post_at] = v
    post(wr_sig)
    stamp(clock())
    for _ in _SPINS:
        if buf[poll_at] == v:
            break
    else:
        _spin(v, limit, *wait)


def _pong_inline(chunk, post, wr_uns, wr_sig, buf, post_at, poll_at, limit, wait) -> None:
    """Responder, inline sends: the answer's byte is written before the ping lands, posted once it has."""
    for v in chunk[:-1]:
        buf[post_at] = v
        for _ in _SPINS:
            if buf[poll_at] == v:
                break
        else:
            _spin(v, limit, *wait)
        post(wr_uns)
    v = chunk[-1]
    buf[post_at] = v
    for _ in _SPINS:
        if buf[poll_at] == v:
            break
    else:
        _spin(v, limit, *wait)
    post(wr_sig)


def _pong(chunk, post, wr_uns, wr_sig, buf, post_at, poll_at, limit, wait) -> None:
    """Responder, sends the adapter reads from the MR: the byte is written after the ping, just before the post."""
    for v in chunk[:-1]:
        for _ in _SPINS:
            if buf[poll_at] == v:
                break
        else:
            _spin(v, limit, *wait)
        buf[post_at] = v
        post(wr_uns)
    v = chunk[-1]
    for _ in _SPINS:
        if buf[poll_at] == v:
            break
    else:
        _spin(v, limit, *wait)
    buf[post_at] = v
    post(wr_sig)


def _spin(v: int, limit_s: float, buf: memoryview, at: int, hard_end: float, local: Endpoint, cq: Any, what: str,
          t_begin: float) -> None:
    """Spin until ``buf[at] == v``; the clock is read only every 1024 spins (see :func:`_check_wait`).  The inner
    loop is one read and one compare: under emulation each Python operation is about a microsecond, and a
    spin's length is how late the answer is seen."""
    end = 0.0
    while True:
        for _ in _SPINS:
            if buf[at] == v:
                return
        end = _check_wait(end, limit_s, hard_end, local, cq, what, t_begin)


def _check_wait(end: float, limit_s: float, hard_end: float, local: Endpoint, cq: Any, what: str,
                t_begin: float) -> float:
    """Called every 1024 spins of a ping-pong wait: the first call starts the clock, a later one past
    ``limit_s`` (or past ``hard_end``, the call's deadline) ends the wait with a typed failure (an error
    completion, if one explains the silence)."""
    now = time.monotonic()
    if now > hard_end:
        raise _fail("transfer", f"{what}: the ping-pong did not end within its deadline "
                    f"({now - t_begin:.1f} s)", kind="timeout", device=local.params.device, node=local.node,
                    elapsed_s=round(now - t_begin, 3))
    if not end:
        return now + limit_s
    if now <= end:
        return end
    n, wcs = cq.poll(1)
    if n and int(wcs[0].status) != 0:
        raise _wc_failure(wcs[0], "transfer", what, local, now - t_begin)
    raise _fail("transfer", f"{what}: no write from the peer within {limit_s:.1f} s: {NO_COMPLETION_CAUSE}",
                kind="timeout", device=local.params.device, node=local.node,
                elapsed_s=round(now - t_begin, 3), detail={"waited_s": limit_s})


def _reap(cq: Any, local: Endpoint, what: str, stall_s: float, t_begin: float) -> None:
    end = 0.0
    while True:
        n, wcs = cq.poll(1)
        if n:
            if int(wcs[0].status) != 0:
                raise _wc_failure(wcs[0], "transfer", what, local, time.monotonic() - t_begin)
            return
        now = time.monotonic()
        if not end:
            end = now + stall_s
        elif now > end:
            raise _timeout_failure("transfer", what, local, stall_s, now - t_begin)


# ---------------------------------------------------------------------------------------------- loopback
@dataclass
class CheckResult:
    """The outcome of :func:`loopback_check`: the building block of a pre-flight ``rdma.datapath`` gate."""

    ok: bool
    stage: str | None             # the stage that failed: open/pd/cq/mr/qp/connect/transfer/verify
    error: str | None             # the one-line verbs error text
    elapsed_ms: float
    bytes: int = 0                # written and read back
    path_mtu: int | None = None
    failure: VerbsFailure | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failure"] = self.failure.to_dict() if self.failure else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckResult":
        return cls(ok=d["ok"], stage=d.get("stage"), error=d.get("error"), elapsed_ms=d["elapsed_ms"],
                   bytes=d.get("bytes", 0), path_mtu=d.get("path_mtu"),
                   failure=VerbsFailure.from_dict(d["failure"]) if d.get("failure") else None,
                   detail=d.get("detail") or {})


def _chunks(total: int, chunk: int) -> list[tuple[int, int]]:
    return [(off, min(chunk, total - off)) for off in range(0, total, chunk)]


def loopback_check(params_a: QpParams, params_b: QpParams, size: int = 4 * MiB, *, chunk: int = 1 * MiB,
                   depth: int = 4, stall_s: float = 2.0, deadline_s: float = 20.0) -> CheckResult:
    """A QP on ``params_a``'s device and one on ``params_b``'s (two QPs on one device when both name the
    same) in this process: A RDMA-WRITEs ``size`` bytes of a seeded pattern into B's MR, B's memory is
    checked, A RDMA-READs it back into its second half and that is checked too.  Bounded by ``stall_s``
    per completion and ``deadline_s`` overall; never raises for a verbs problem."""
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    a = b = None
    stage = "open"
    res = CheckResult(ok=False, stage=None, error=None, elapsed_ms=0.0,
                      detail={"a": params_a.device, "b": params_b.device, "size": size})
    try:
        a = Endpoint(params_a, mr_size=2 * size, num_qps=1, max_send_wr=max(8, depth * 2))
        b = Endpoint(params_b, mr_size=size, num_qps=1, max_send_wr=8)
        stage = "connect"
        connect(a, b.info())
        connect(b, a.info())
        res.path_mtu = a.path_mtu
        stage = "transfer"
        run = new_run_id()
        pieces = _chunks(size, chunk)
        for i, (off, n) in enumerate(pieces):
            a.fill(off, pattern(pattern_seed(run, chunk, i), n))
        e = _pyverbs().enums

        def feeder(opcode: int, local_base: int):
            queue = list(enumerate(pieces))

            def next_wr(lane: int) -> Any:
                if not queue:
                    return None
                i, (off, n) = queue.pop(0)
                return _make_wr(a, opcode, lane, local_base + off, n, a.remote.addr + off, a.remote.rkey)

            return next_wr

        lanes = min(depth, len(pieces))
        _pump(a, lanes, feeder(e.IBV_WR_RDMA_WRITE, 0), stall_s, deadline, "transfer",
              f"RDMA WRITE {human_bytes(size)} {params_a.device} -> {params_b.device}")
        stage = "verify"
        for i, (off, n) in enumerate(pieces):
            bad = b.check(off, pattern(pattern_seed(run, chunk, i), n))
            if bad is not None:
                raise _fail("verify", f"{params_b.device}'s memory differs from what {params_a.device} wrote at byte "
                            f"{bad} of {size}", kind="mismatch", device=params_b.device)
        stage = "transfer"
        _pump(a, lanes, feeder(e.IBV_WR_RDMA_READ, size), stall_s, deadline, "transfer",
              f"RDMA READ {human_bytes(size)} {params_a.device} <- {params_b.device}")
        stage = "verify"
        for i, (off, n) in enumerate(pieces):
            bad = a.check(size + off, pattern(pattern_seed(run, chunk, i), n))
            if bad is not None:
                raise _fail("verify", f"what {params_a.device} read back differs at byte {bad - size} of {size}",
                            kind="mismatch", device=params_a.device)
        res.ok, res.bytes = True, size
    except VerbsError as ex:
        f = ex.failure
        res.failure, res.stage, res.error = f, f.stage, f.message
    except Exception as ex:  # anything unexpected is still one line in the stage we were in
        res.stage, res.error = stage, one_line(f"{type(ex).__name__}: {ex}")
        res.failure = VerbsFailure(stage=stage, message=res.error, **_errno_fields(_exc_errno(ex)))
    finally:
        for ep in (a, b):
            if ep is not None:
                ep.close()
    res.elapsed_ms = round((time.monotonic() - t0) * 1000, 1)
    return res


__all__ = [
    "BandwidthPoint", "BandwidthResult", "CheckResult", "DEFAULT_BW_SIZES", "DEFAULT_LAT_SIZES", "Endpoint",
    "EndpointInfo", "LatencyPoint", "LatencyResult", "QpParams", "VerbsError", "VerbsFailure", "WC_STATUS",
    "connect", "latency_reset", "loopback_check", "memlock_limits", "new_run_id", "pattern", "pattern_seed",
    "roce_v2_ipv4_gid_index", "uverbs_node", "write_bandwidth", "write_latency",
]
