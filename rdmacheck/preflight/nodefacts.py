"""NodeFacts: everything preflight knows about one node, in one typed record.

Phase 1 (``gather.gather``) fills it: every file read through the root, every
live probe (NVML, pyverbs, dcb, NCCL library, DNS, route, TCP, ping, bind)
with its answer, timing and error, and the facts derived from those under the
configuration (the ports NCCL selects, the GID it will pick, the active MTU
and where it came from, the bootstrap address NCCL will advertise).

Phase 2 (``preflight.judge``) runs the gates: pure functions
``gate(facts, config) -> list[Result]`` that read only this record.

The record is versioned (``FACTS_VERSION``) and round-trips through JSON
(``to_dict`` / ``from_dict``), so evidence carries it and
``preflight --facts EVIDENCE.json`` re-judges a node without the node.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from rdmacheck.preflight.facts.devfiles import DevFiles
from rdmacheck.preflight.facts.infiniband import Device, Port
from rdmacheck.preflight.facts.limits import Limit
from rdmacheck.preflight.facts.net import NetDev

# Bump when a field changes meaning or shape; readers refuse other versions.
FACTS_VERSION = 1

@dataclasses.dataclass
class Probe:
    """One live question and its answer: what ran, how long it took, what failed."""

    kind: str                 # nvml, verbs, dcb, nccl_lib, addrs, shm, resolve, route, tcp, ping, bind
    target: str = ""          # what was asked about: a netdev, a host name, "addr:port" ...
    answer: Any = None        # JSON-able
    elapsed_s: float = 0.0
    error: str | None = None
    source: str = "live"      # live | snapshot (answered by the snapshot's recording)

    @property
    def key(self) -> str:
        return probe_key(self.kind, self.target)


def probe_key(kind: str, target: str = "") -> str:
    return f"{kind}:{target}" if target else kind


# The shape of each probe's answer, as the gates read it: a recorded answer (a snapshot's probes.json or
# meta files, a --facts record) is foreign data and is checked against it before any gate sees it.
# A schema is a type (or tuple of types; None allowed where listed), {"key": schema} for an object whose
# listed keys have that shape (others kept), ("map", schema) for an object of any keys, [schema] a list.
_S = str


class _IP:
    """Schema leaf: an IP address text (ipaddress reads it), or None."""


_SN = (str, type(None))
_NUMN = (int, float, type(None))
_BN = (bool, type(None))
_IN = (int, type(None))
ANSWER_SCHEMA: dict[str, Any] = {
    "addrs": ("map", {"ipv4": [_S], "ipv6": [_S]}),
    "shm": {"size": _IN},
    "verbs": {"available": _BN, "error": _SN, "devices": ("map", {
        "fw_version": _SN, "error": _SN,
        "ports": ("map", {"state": _IN, "active_mtu": _IN, "max_mtu": _IN, "link_layer": _SN, "gid_tbl_len": _IN})})},
    "nvml": {"state": _SN, "error": _SN, "elapsed_s": (int, float)},
    "nccl_lib": {"version": _SN, "library": _SN},
    "dcb.app": {"error": _SN, "unsupported": _BN, "missing": _BN, "timeout": _BN, "json": (dict, list, type(None))},
    "dcb.pfc": {"error": _SN, "unsupported": _BN, "missing": _BN, "timeout": _BN, "json": (dict, list, type(None))},
    "resolve": {"addrs": [_IP], "error": _SN, "elapsed_s": (int, float), "timed_out": _BN, "!": ("addrs", "error", "elapsed_s")},
    "route": {"dev": _SN, "src": _SN, "type": _SN, "prefix": _SN, "error": _SN},
    "tcp": {"ok": _BN, "error": _SN, "elapsed_s": (int, float)},
    "ping": {"ok": _BN, "payload": _IN, "received": _IN, "reason": _SN, "cmd": _SN, "output": _SN,
             "elapsed_s": (int, float)},
    "bind": {"free": bool, "error": _SN, "!": ("free",)},
    "dad": {"ifname": _S, "mac": _SN, "addresses": [_S], "probes": _IN, "error": _SN, "elapsed_s": (int, float),
            "duplicates": [{"address": _S, "mac": _S, "op": _S, "local_netdev": _SN, "!": ("address", "mac")}],
            "!": ("ifname", "addresses", "duplicates")},
}
# The record's untyped fields, read by the gates key by key ("!": keys that must be there).
FIELD_SCHEMA: dict[str, Any] = {
    "gdr": {"nvidia_peermem": _BN, "peer_memory": [_S], "kernel": _SN, "kernel_dmabuf": _BN, "nvidia_driver": _SN,
            "open_kernel_module": _BN, "dmabuf": _BN,
            "!": ("nvidia_peermem", "peer_memory", "kernel", "kernel_dmabuf", "nvidia_driver", "open_kernel_module",
                  "dmabuf")},
    "peer": {"name": _SN, "addr": _IP, "resolve": (ANSWER_SCHEMA["resolve"], type(None)), "role": _SN,
             "local_if": _SN, "detected_role": _SN, "declared_role": _SN, "declared_by": _SN,
             "!": ("name", "addr", "resolve", "role", "local_if")},
    "bootstrap": {"ifname": _SN, "addr": _SN, "addr_len": _SN, "rule": _SN},
}


def _shape_error(schema: Any, v: Any, where: str) -> str | None:
    if isinstance(schema, tuple) and schema[:1] != ("map",) and any(isinstance(x, dict) for x in schema):
        # (schema, None): an optional object
        if v is None and type(None) in schema:
            return None
        schema = next(x for x in schema if isinstance(x, dict))
    if isinstance(schema, dict):
        if not isinstance(v, dict):
            return f"{where}: expected an object, got {type(v).__name__}"
        for k in schema.get("!", ()):
            if k not in v:
                return f"{where}: {k!r} missing"
        for k, sub in schema.items():
            if k != "!" and k in v:
                e = _shape_error(sub, v[k], f"{where}.{k}")
                if e:
                    return e
        return None
    if isinstance(schema, tuple) and schema and schema[0] == "map":
        if not isinstance(v, dict):
            return f"{where}: expected an object, got {type(v).__name__}"
        for k, x in v.items():
            e = _shape_error(schema[1], x, f"{where}.{k}")
            if e:
                return e
        return None
    if isinstance(schema, list):
        if not isinstance(v, list):
            return f"{where}: expected a list, got {type(v).__name__}"
        for i, x in enumerate(v):
            e = _shape_error(schema[0], x, f"{where}[{i}]")
            if e:
                return e
        return None
    if schema is _IP:
        if v is None:
            return None
        import ipaddress

        try:
            ipaddress.ip_address(v if isinstance(v, str) else "")
        except ValueError:
            return f"{where}: {str(v)[:40]!r} is not an IP address"
        return None
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(v, bool) and bool not in types:
        return f"{where}: expected {'/'.join(t.__name__ for t in types)}, got bool"
    if isinstance(v, float) and v != v:
        return f"{where}: NaN"
    if not isinstance(v, types):
        return f"{where}: expected {'/'.join(t.__name__ for t in types)}, got {type(v).__name__}"
    return None


def answer_problem(kind: str, answer: Any) -> str | None:
    """What is wrong with a recorded ``answer`` of probe ``kind`` (None: it has the shape the gates read)."""
    schema = ANSWER_SCHEMA.get(kind)
    if schema is None or answer is None:
        return None
    return _shape_error(schema, answer, kind)


@dataclasses.dataclass
class PciFacts:
    """What pci.acs needs: GPU and HCA functions, their bridges, the bridges' config space."""

    gpus: list[str] = dataclasses.field(default_factory=list)
    hcas: dict[str, str] = dataclasses.field(default_factory=dict)          # rdma device -> BDF
    ancestors: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # BDF -> bridges, nearest first
    config: dict[str, str | None] = dataclasses.field(default_factory=dict)    # BDF -> config space (hex)


@dataclasses.dataclass
class Selection:
    """The RDMA ports NCCL will use under NCCL_IB_HCA, and what NCCL derives for each.

    ``active_mtu``: port -> (bytes, source); ``gid_index`` / ``gid_info``: the GID NCCL
    will pick (or NCCL_IB_GID_INDEX pins).  Derived in phase 1 (``gather.derive``).
    """

    spec: Any                 # nccl.spec.ListSpec
    spec_error: str | None
    explicit: bool
    ports: list[Port]
    # matched by NCCL_IB_HCA but not ACTIVE and not named exactly: NCCL skips them (gather.select_ports)
    skipped: list[Port] = dataclasses.field(default_factory=list)
    active_mtu: dict[str, tuple[int | None, str | None]] = dataclasses.field(default_factory=dict)
    gid_index: dict[str, int | None] = dataclasses.field(default_factory=dict)
    gid_info: dict[str, dict] = dataclasses.field(default_factory=dict)
    gid_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"hca": getattr(self.spec, "raw", "") or "", "spec_error": self.spec_error,
                "explicit": self.explicit, "ports": [p.name for p in self.ports],
                "skipped": [p.name for p in self.skipped],
                "active_mtu": {k: list(v) for k, v in self.active_mtu.items()},
                "gid_index": dict(self.gid_index), "gid_info": dict(self.gid_info), "gid_error": self.gid_error}


@dataclasses.dataclass
class NodeFacts:
    version: int = FACTS_VERSION
    live: bool = True                 # gathered from the live host (False: a --root replay)
    root: str = "/"
    host: str | None = None
    # who the node is beyond its host name (cloned VMs are all "vm"): /etc/machine-id, else the boot id
    node_id: str | None = None
    kernel: str | None = None
    # what the firmware calls the machine (/sys/class/dmi/id/product_name, /proc/device-tree/model): platform detection
    model: str | None = None
    # files, one reader each (facts/*.py)
    ib: dict[str, Device] = dataclasses.field(default_factory=dict)
    net: dict[str, NetDev] = dataclasses.field(default_factory=dict)
    limits: dict[str, Limit] | None = None
    devfiles: DevFiles = dataclasses.field(default_factory=lambda: DevFiles([], {}, False, []))
    meminfo: dict[str, int] = dataclasses.field(default_factory=dict)
    gdr: dict[str, Any] = dataclasses.field(default_factory=dict)
    pci: PciFacts = dataclasses.field(default_factory=PciFacts)
    # RDMA port ("dev:port") -> its netdevs (facts.infiniband.port_netdevs, the one home of that map)
    # /proc/sys/net/ipv4/conf/{all,<RDMA netdev>}/{arp_ignore,arp_announce,arp_filter,rp_filter} (facts.net)
    ipv4_conf: dict[str, dict[str, int | None]] = dataclasses.field(default_factory=dict)
    port_netdevs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # every live probe, by key (probe_key)
    probes: dict[str, Probe] = dataclasses.field(default_factory=dict)
    # derived under the configuration (gather.derive)
    selection: Selection | None = None
    bootstrap: dict[str, Any] = dataclasses.field(default_factory=dict)
    peer: dict[str, Any] = dataclasses.field(default_factory=dict)
    # health below the surface (gather.gather): "kernel_log" (facts/kernlog.py: XID events, NIC fatal lines)
    # and "nic" (facts/nichealth.py: AER, PCIe link, port error counters); GPU health rides in the nvml probe
    health: dict[str, Any] = dataclasses.field(default_factory=dict)
    # host paths a replay could not read as files (FIFOs, devices ...), named for the user
    skipped_paths: list[str] = dataclasses.field(default_factory=list)

    # -- probe answers under the names the gates use ----------------------
    def answer(self, kind: str, target: str = "", default: Any = None) -> Any:
        p = self.probes.get(probe_key(kind, target))
        return default if p is None else p.answer

    @property
    def verbs(self) -> dict[str, Any]:
        a = self.answer("verbs")  # None also when the probe itself raised: no answer, never a crash in a gate
        return a if isinstance(a, dict) else {"available": False, "error": self._no_answer("verbs"), "devices": {}}

    @property
    def nvml(self) -> dict[str, Any]:
        a = self.answer("nvml")
        return a if isinstance(a, dict) else {"state": "absent", "error": self._no_answer("nvml", "NVML")}

    def _no_answer(self, kind: str, what: str | None = None) -> str:
        p = self.probes.get(probe_key(kind))
        return f"{what or kind} not probed" if p is None else f"{what or kind} gave no answer ({p.error or 'none recorded'})"

    @property
    def nccl_lib(self) -> dict[str, Any]:
        return self.answer("nccl_lib", default={"version": None, "library": None})

    @property
    def shm(self) -> int | None:
        a = self.answer("shm")
        return a.get("size") if isinstance(a, dict) else None

    @property
    def addrs(self) -> dict[str, dict[str, list[str]]]:
        a = self.answer("addrs")
        return a if isinstance(a, dict) else {}

    @property
    def local_addresses(self) -> dict[str, list[str]]:
        """{ifname: ["192.168.100.1/24", ...]}: this host's IPv4 addresses."""
        return {k: list((v or {}).get("ipv4") or []) for k, v in self.addrs.items() if isinstance(v, dict)}

    def dcb(self, netdev: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(app, pfc) answers of ``dcb -j`` for one netdev, None when not probed."""
        app, pfc = self.probes.get(probe_key("dcb.app", netdev)), self.probes.get(probe_key("dcb.pfc", netdev))
        if app is None or pfc is None:
            return None
        return app.answer or {}, pfc.answer or {}

    # -- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if isinstance(v, Selection) else _dump(v)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "NodeFacts":
        """Rebuild a record written by ``to_dict``; ValueError names what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("facts record is not an object")
        v = d.get("version")
        if v != FACTS_VERSION:
            raise ValueError(f"facts record version {v!r}; this rdmacheck reads version {FACTS_VERSION}")
        try:
            nf = _build(cls, {k: val for k, val in d.items() if k != "selection"})
            for key, p in nf.probes.items():
                if key != p.key:  # the gates ask by key, the schema is chosen by kind: the two must agree
                    raise ValueError(f"probes[{key!r}]: kind {p.kind!r} and target {p.target!r} do not make its key")
                bad = answer_problem(p.kind, p.answer)
                if bad:
                    raise ValueError(f"probes[{key!r}].answer: {bad}")
            for name, schema in FIELD_SCHEMA.items():
                val = getattr(nf, name)
                if name == "bootstrap" and not val:
                    continue  # {}: nothing running matches NCCL_SOCKET_IFNAME (rdma.netdev says so)
                if name not in d:
                    raise ValueError(f"{name}: missing")
                bad = _shape_error(schema, val, name)
                if bad:
                    raise ValueError(bad)
            for key, dev in nf.ib.items():  # the gates look devices and ports up by these names
                if dev.name != key or any(p.device != key or p.port != n for n, p in dev.ports.items()):
                    raise ValueError(f"ib[{key!r}]: its name, or a port's device or number, does not match the key")
            sel = d.get("selection")
            if isinstance(sel, dict):
                nf.selection = _selection_from(sel, nf)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
            # a record is the user's input (--facts FILE): any shape it has is a malformed input, not a bug
            where = "selection" if isinstance(d.get("selection"), dict) and "nf" in locals() else "record"
            raise ValueError(f"facts record malformed ({where}): {type(e).__name__}: {str(e)[:200]}") from None
        return nf


def _selection_from(d: dict[str, Any], nf: NodeFacts) -> Selection:
    from rdmacheck.util.errors import UsageError
    from rdmacheck.nccl.spec import ListSpec, parse_list_spec

    raw = d.get("hca") or None
    try:
        spec = parse_list_spec(raw, "NCCL_IB_HCA", with_ports=True)
    except UsageError:
        spec = ListSpec(entries=[], raw=raw or "")
    ports = {p.name: p for dev in nf.ib.values() for p in dev.ports.values()}
    return Selection(spec=spec, spec_error=d.get("spec_error"), explicit=bool(d.get("explicit")),
                     ports=[ports[n] for n in d.get("ports") or [] if n in ports],
                     skipped=[ports[n] for n in d.get("skipped") or [] if n in ports],
                     active_mtu={k: (v[0], v[1]) for k, v in (d.get("active_mtu") or {}).items()},
                     gid_index=dict(d.get("gid_index") or {}), gid_info=dict(d.get("gid_info") or {}),
                     gid_error=d.get("gid_error"))


def _dump(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _dump(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _dump(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_dump(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        import sys

        mod = sys.modules[cls.__module__]
        _HINTS[cls] = typing.get_type_hints(cls, vars(mod))
    return _HINTS[cls]


def _build(tp: Any, v: Any) -> Any:
    """Rebuild a value of type ``tp`` from JSON (dataclasses, dict[int, X], list[X], X | None)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return v
    if v is None:
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in typing.get_args(tp):
            return v
        raise TypeError("null where a value belongs")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(args[0], v) if len(args) == 1 else v
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise TypeError(f"{tp.__name__}: expected an object, got {type(v).__name__}")
        hints = _hints(tp)
        kw = {f.name: _build(hints[f.name], v[f.name]) for f in dataclasses.fields(tp) if f.init and f.name in v}
        return tp(**kw)
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if not isinstance(v, dict):
            raise TypeError(f"expected an object, got {type(v).__name__}")
        return {(int(k) if kt is int else k): _build(vt, x) for k, x in v.items()}
    if origin in (list, tuple):
        (it, *_rest) = typing.get_args(tp) or (Any,)
        if not isinstance(v, list):
            raise TypeError(f"expected a list, got {type(v).__name__}")
        return [_build(it, x) for x in v]
    if tp in (int, float) and isinstance(v, bool):
        raise TypeError("expected a number, got a boolean")
    if tp is float and isinstance(v, int):
        return float(v)
    # the leaves too: a record is the user's input, and a list where a string belongs failed deep inside a gate
    if tp is str and not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    if tp is int and not isinstance(v, int):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    if tp is float and not (isinstance(v, float) and v == v):
        raise TypeError(f"expected a number, got {type(v).__name__}")
    if tp is bool and not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {type(v).__name__}")
    return v


__all__ = ["FACTS_VERSION", "NodeFacts", "PciFacts", "Probe", "Selection",
           "probe_key"]
