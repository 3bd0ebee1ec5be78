"""Proof of the path: NCCL's own account plus NIC counters around every size.

Enable it on a bench run with the bench's hook mechanism (every rank, also
under torchrun)::

    rdmacheck bench --hook rdmacheck.bench.path_proof:install ...

``install(hooks)`` runs in each rank before torch.distributed starts, so it
can still set NCCL's debug variables (NCCL reads them at init):

* ``NCCL_DEBUG=INFO``, ``NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH`` and
  ``NCCL_DEBUG_FILE=<dir>/nccl.%h.%p.log`` (one file per rank, nothing on the
  terminal).  A value the user already set is kept, except that a quieter
  NCCL_DEBUG is raised to INFO and INIT,NET are added to a narrower SUBSYS list.
* ``before_size``/``after_size``: the node's first local rank reads the
  counters of the selected HCA(s) (NCCL_IB_HCA; port_xmit_data/port_rcv_data
  count 4-byte words) and interface(s) (NCCL_SOCKET_IFNAME for NCCL,
  GLOO_SOCKET_IFNAME for gloo, plus each selected HCA's own netdev), and of
  every other netdev so a failure can say where the bytes went instead.  The
  deltas are gathered to every rank and stored in ``record["wire"]``; each
  node's entry also carries the size window's lossless verdict per selected
  port (``lossless``: ``rdmacheck.preflight.facts.lossless.port_verdicts`` on every
  counter of the port and its netdev), summed up per size in
  ``context["path_proof"]["lossless"]``.
* ``after_run``: each rank reads its own NCCL log, the texts are gathered to
  rank 0, parsed (:mod:`rdmacheck.nccl.log`) and judged with the counter
  deltas (:mod:`rdmacheck.bench.gates`): ``bench.transport`` and ``bench.wire``.

Settings, read from the environment (the hook takes no arguments):

=============================  ================================================
``RDMACHECK_PATH_DIR``         where NCCL writes its per-rank logs (default ``reports/nccl-logs``)
``RDMACHECK_WIRE_IFNAME``      interfaces to count instead of the *_SOCKET_IFNAME ones (comma list)
``RDMACHECK_WIRE_HCA``         HCAs to count instead of NCCL_IB_HCA (NCCL_IB_HCA syntax)
``RDMACHECK_PREFLIGHT``        preflight evidence JSON file(s) (``os.pathsep``/comma separated) to cross-reference
``RDMACHECK_EXPECT_NET``       ``IB`` (default), ``Socket`` or ``any``
``RDMACHECK_EXPECT_LINK``      ``RoCE`` (default), ``IB`` or ``any``
``RDMACHECK_WIRE_MIN_RATIO``   fail below this fraction of the expected bytes (default 0.5)
=============================  ================================================
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from rdmacheck.util.errors import UsageError
from rdmacheck.nccl.spec import hca_selected, parse_list_spec
from rdmacheck.preflight.root import HostRoot
from rdmacheck.preflight.facts.nodeid import counter_scope, nccl_host_id, rank_node

ENV_DIR = "RDMACHECK_PATH_DIR"
ENV_WIRE_IF = "RDMACHECK_WIRE_IFNAME"
ENV_WIRE_HCA = "RDMACHECK_WIRE_HCA"
ENV_PREFLIGHT = "RDMACHECK_PREFLIGHT"
ENV_EXPECT_NET = "RDMACHECK_EXPECT_NET"
ENV_EXPECT_LINK = "RDMACHECK_EXPECT_LINK"
ENV_MIN_RATIO = "RDMACHECK_WIRE_MIN_RATIO"
DEFAULT_DIR = "reports/nccl-logs"
LOG_PATTERN = "nccl.%h.%p.log"
# What rank 0 needs from each rank's NCCL log: keeps the gather small even when
# GRAPH prints a large topology.
_KEEP = re.compile(r"NCCL (WARN|INFO (NCCL version|Using network|NET/|Channel |GPU Direct|NCCL_\w+ set|.*libibverbs))")
_MAX_LOG_CHARS = 1 << 20


# ------------------------------------------------------------------ environment


def nccl_debug_env(log_dir: str | os.PathLike, current: dict[str, str] | None = None) -> dict[str, str]:
    """The NCCL_DEBUG* values to set so NCCL writes its account to per-rank files."""
    cur = current if current is not None else dict(os.environ)
    out: dict[str, str] = {}
    level = (cur.get("NCCL_DEBUG") or "").strip().upper()
    if level not in ("INFO", "TRACE"):
        out["NCCL_DEBUG"] = "INFO"
    subsys = (cur.get("NCCL_DEBUG_SUBSYS") or "").strip()
    if not subsys:
        out["NCCL_DEBUG_SUBSYS"] = "INIT,NET,GRAPH"
    elif not subsys.startswith("^") and "ALL" not in subsys.upper():
        have = [s.strip().upper() for s in subsys.split(",") if s.strip()]
        add = [s for s in ("INIT", "NET") if s not in have]
        if add:
            out["NCCL_DEBUG_SUBSYS"] = ",".join(have + add)
    if not cur.get("NCCL_DEBUG_FILE"):
        out["NCCL_DEBUG_FILE"] = str(Path(log_dir) / LOG_PATTERN)
    return out


def log_file_for(pattern: str, host: str, pid: int) -> Path:
    """NCCL_DEBUG_FILE with %h/%p expanded as NCCL's debug.cc does."""
    return Path(pattern.replace("%h", host).replace("%p", str(pid)))


# ------------------------------------------------------------------ selection and counters


def _split(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


def select_netdevs(spec: str | None, available: list[str], nccl_style: bool = True) -> list[str]:
    """Interfaces named by NCCL_SOCKET_IFNAME-style ``spec`` (prefix, ``=`` exact, ``^`` exclude:
    rdmacheck/nccl/spec.py, NCCL's syntax); an excluding spec never selects ``lo``.

    ``nccl_style=False`` is GLOO_SOCKET_IFNAME: a comma list of exact names.
    """
    if not spec:
        return []
    if not nccl_style:
        return [n for n in _split(spec) if n in available]
    try:
        sel = parse_list_spec(spec, "NCCL_SOCKET_IFNAME")
    except UsageError:
        return []
    return [a for a in available if sel.matches(a) and not (sel.exclude and a == "lo")]


def select_hcas(spec: str | None, root: HostRoot) -> list[tuple[tuple[str, int], list[str]]]:
    """((hca, port), its netdevs) for each port NCCL selects under NCCL_IB_HCA-style ``spec`` (None: NCCL's
    choice with the variable unset): preflight's selection (gather.select_from, NCCL's ACTIVE rule) and its
    port -> netdev map (facts.infiniband), so the wire gate counts what preflight judged."""
    from rdmacheck.preflight.facts.infiniband import read_infiniband
    from rdmacheck.preflight.gather import select_from

    sel = select_from(read_infiniband(root), spec)
    return [((p.device, p.port), list(p.netdevs)) for p in sel.ports]


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, int | None]]:
    """Byte deltas per device; None where the counter reset, saturated or is missing (facts.counters rules)."""
    from rdmacheck.preflight.facts.counters import counter_delta

    out: dict[str, dict[str, int | None]] = {}
    for k, v in b.items():
        if k in a:
            out[k] = {"tx": counter_delta(a[k]["tx"], v["tx"]), "rx": counter_delta(a[k]["rx"], v["rx"])}
    return out


class PathProof:
    """Per-rank state of the path proof (see module doc)."""

    def __init__(self, env: dict[str, str] | None = None, root: HostRoot | None = None) -> None:
        self.env = env if env is not None else os.environ
        self.root = root or HostRoot("/")
        self.log_dir = Path(self.env.get(ENV_DIR) or DEFAULT_DIR)
        self.local_rank = int(self.env.get("LOCAL_RANK") or 0)
        self.host = socket.gethostname()
        # the node as NCCL decides it (NCCL_HOSTID, else host name + boot id), and whose counters a read sees
        self.node = nccl_host_id(self.env)
        self.scope = counter_scope()
        self.backend: str | None = None
        self.hcas: list[tuple[str, int]] = []
        self.port_netdevs: dict[str, list[str]] = {}
        self.netdevs: list[str] = []
        self._before: dict[str, dict[str, dict[str, int]]] | None = None
        self._before_counters: Any = None  # facts.counters.CounterSample of the selected ports (lossless verdict)
        self.preflight: list | None = None
        try:
            self.min_ratio = float(self.env.get(ENV_MIN_RATIO) or 0.5)
        except ValueError:
            raise UsageError(f"{ENV_MIN_RATIO}={self.env.get(ENV_MIN_RATIO)!r} is not a number; e.g. 0.5") from None

    # -- setup -----------------------------------------------------------------------------------
    def install(self, hooks) -> None:
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{ENV_DIR}: cannot create {self.log_dir} ({e.strerror}); choose a writable folder") from None
        # read the preflight evidence now: a bad path is a usage error (exit 2) before any rank starts
        self.preflight = _load_preflight(self.env.get(ENV_PREFLIGHT))
        for k, v in nccl_debug_env(self.log_dir, dict(self.env)).items():
            self.env[k] = v
        hooks.before_size.append(self.before_size)
        hooks.after_size.append(self.after_size)
        hooks.after_run.append(self.after_run)

    def _select(self) -> None:
        if self.backend is not None:
            return
        try:
            import torch.distributed as dist

            backend = str(dist.get_backend()) if dist.is_initialized() else "gloo"
        except Exception:
            backend = "gloo"
        self.select(backend)

    def select(self, backend: str) -> None:
        """Choose the HCA ports and netdevs whose counters prove the path for ``backend``."""
        self.backend = backend
        available = self.root.listdir("/sys/class/net")
        hca_spec = self.env.get(ENV_WIRE_HCA) or (self.env.get("NCCL_IB_HCA") if self.backend == "nccl" else None)
        # NCCL_IB_HCA unset: NCCL may use any ACTIVE HCA, so count them all; gloo uses none unless told
        picked = select_hcas(hca_spec, self.root) if (hca_spec or backend == "nccl") else []
        self.hcas = [hp for hp, _ in picked]
        self.port_netdevs = {f"{h}/{p}": list(nds) for (h, p), nds in picked}  # facts.infiniband's map
        if self.env.get(ENV_WIRE_IF):
            self.netdevs = select_netdevs(self.env[ENV_WIRE_IF], available, nccl_style=False)
        elif self.backend == "nccl":
            self.netdevs = select_netdevs(self.env.get("NCCL_SOCKET_IFNAME"), available)
        else:
            self.netdevs = select_netdevs(self.env.get("GLOO_SOCKET_IFNAME"), available, nccl_style=False)
        for _, netdevs in picked:
            for n in netdevs:
                if n in available and n not in self.netdevs:
                    self.netdevs.append(n)

    def read(self) -> dict[str, dict[str, dict[str, int | None]]]:
        """Byte counters now: {"hcas": {"mlx5_0/1": {tx, rx}}, "netdevs": {...}, "others": {...}}.

        Read with rdmacheck.preflight.facts.counters (4-byte words -> bytes; rxe has no byte counters: None,
        its netdev carries the bytes).  A 32-bit counter stuck at 2^32-1 reads None (saturated).
        """
        from rdmacheck.preflight.facts.counters import read_netdev_counters, read_port_counters

        out: dict[str, dict[str, dict[str, int | None]]] = {"hcas": {}, "netdevs": {}, "others": {}}
        for h, p in self.hcas:
            pc = read_port_counters(self.root, h, p)
            if pc is not None:
                sat = set(pc.saturated)
                if pc.tx_bytes is None and pc.rx_bytes is None:
                    continue  # no PMA data counters (rxe): nothing to count here, the netdev carries it
                out["hcas"][pc.key] = {
                    "tx": None if "counters/port_xmit_data" in sat else pc.tx_bytes,
                    "rx": None if "counters/port_rcv_data" in sat else pc.rx_bytes,
                }
        for n in self.root.listdir("/sys/class/net"):
            nc = read_netdev_counters(self.root, n)
            if nc is not None and (nc.tx_bytes is not None or nc.rx_bytes is not None):
                out["netdevs" if n in self.netdevs else "others"][n] = {"tx": nc.tx_bytes, "rx": nc.rx_bytes}
        return out

    # -- hooks -----------------------------------------------------------------------------------
    def counter_sample(self):
        """Every counter of the selected HCA ports and netdevs now (None without a selected HCA)."""
        from rdmacheck.preflight.facts.counters import read_sample

        devs = sorted({h for h, _ in self.hcas})
        return read_sample(self.root, devs, list(self.netdevs)) if devs else None

    def lossless(self, before, after) -> dict[str, dict[str, Any]]:
        """The window's verdict per selected port (facts.lossless): {"dev/port": Verdict.to_dict()}."""
        from rdmacheck.preflight.facts.counters import sample_delta
        from rdmacheck.preflight.facts.lossless import port_verdicts

        nds = {k: v for k, v in self.port_netdevs.items()}
        v = port_verdicts(sample_delta(before, after), nds)
        return {k: x.to_dict() for k, x in sorted(v.items()) if k in nds}

    def before_size(self, row) -> None:
        self._select()
        self._before = self.read() if self.local_rank == 0 else None
        self._before_counters = self.counter_sample() if self.local_rank == 0 else None

    def after_size(self, row, record: dict) -> None:
        sample = None
        if self.local_rank == 0 and self._before is not None:
            after = self.read()
            rank = int(self.env.get("RANK") or 0)
            sample = {"host": self.host, "rank": rank, "node": self.node["id"], "node_source": self.node["source"],
                      "scope": self.scope,
                      **{fam: _delta(self._before[fam], after[fam]) for fam in ("hcas", "netdevs", "others")}}
            if self._before_counters is not None:
                sample["lossless"] = self.lossless(self._before_counters, self.counter_sample())
        samples = _gather(sample)
        record["wire"] = {"nodes": [s for s in samples if s]}

    def _my_log(self) -> tuple[str, str]:
        pattern = self.env.get("NCCL_DEBUG_FILE") or str(self.log_dir / LOG_PATTERN)
        path = log_file_for(pattern, self.host, os.getpid())
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(8 * _MAX_LOG_CHARS)
        except OSError:
            return str(path), ""
        kept = "\n".join(line for line in text.splitlines() if _KEEP.search(line))
        return str(path), kept[:_MAX_LOG_CHARS]

    def after_run(self, info) -> list:
        from rdmacheck.bench.gates import PathExpectation, check_transport, check_wire
        from rdmacheck.nccl.log import NcclLog, parse_text

        path, text = self._my_log() if info.backend == "nccl" else ("", "")
        mine = {"rank": info.rank, "host": self.host, "node": self.node["id"], "path": path, "text": text}
        allp = _gather(mine)
        if info.rank != 0:
            return []
        log = NcclLog()
        by_host: dict[str, NcclLog] = {}
        for p in allp:
            if p and p.get("text"):
                one = parse_text(p["text"], source=f"rank {p['rank']} ({p['host']}): {p['path']}")
                log = log.merge(one)
                key = p.get("node") or p["host"]  # one entry per node as NCCL counts nodes
                by_host[key] = by_host.get(key, NcclLog()).merge(one)
        env = dict((info.context.get("config") or {}).get("env") or {})
        env.update({k: v for k, v in self.env.items() if k.startswith(("NCCL_", "GLOO_"))})
        expect = PathExpectation.from_env(env, net=self.env.get(ENV_EXPECT_NET) or None,
                                          link=_link(self.env.get(ENV_EXPECT_LINK)))
        hosts = {rank_node(r) for r in (info.context.get("ranks") or []) if isinstance(r, dict)}
        transport = check_transport(log if info.backend == "nccl" else None, expect, backend=info.backend,
                                    multi_node=len(hosts) > 1 if hosts else None, env=env, preflight=self.preflight)
        wire = check_wire(info.records, info.context, min_ratio=self.min_ratio)
        info.context["path_proof"] = {
            "log_dir": str(self.log_dir),
            "logs": [{"rank": p["rank"], "host": p["host"], "path": p["path"], "found": bool(p["text"])}
                     for p in allp if p],
            "nccl": log.summary() if log.nccl_lines else None,
            "preflight": self.env.get(ENV_PREFLIGHT) or None,
            "nodes": per_node(info.context.get("ranks") or [], by_host, wire.details.get("rows") or []),
            "lossless": lossless_by_size(info.records),
        }
        return [transport, wire]


def per_node(ranks: list, by_host: dict, rows: list) -> dict[str, dict[str, Any]]:
    """One line per node for the report: its transport (its own ranks' NCCL lines) and its wire proof.

    Nodes are keyed as NCCL counts them: each rank's NCCL host id where the evidence has it
    (facts/nodeid.py), else its host name; ``by_host`` is keyed the same way.  ``hostnames`` and
    ``node_source`` say which machine a node was on and where its id came from.
    ``wire`` is the largest judged size of the sweep (the one nearest the bandwidth plateau).
    """
    out: dict[str, dict[str, Any]] = {}
    for r in ranks:
        key = rank_node(r) if isinstance(r, dict) else None
        if key:
            d = out.setdefault(key, {"ranks": []})
            d["ranks"].append(r.get("rank"))
            if r.get("nccl_host_id_source"):
                d["node_source"] = r["nccl_host_id_source"]
            if r.get("host") and r["host"] not in d.setdefault("hostnames", []):
                d["hostnames"].append(r["host"])
    for host, log in by_host.items():
        d = out.setdefault(host, {"ranks": []})
        by_index = {x.index: x for x in log.ib_devices}
        d.update({
            "net_plugin": log.net_plugin if log.net_channels else None,
            "paths": log.path_kinds,
            "gdr_enabled": log.gdr_enabled,
            "used_hcas": log.used_hcas(),
            "links": sorted({by_index[c.net_dev].link for c in log.net_channels
                             if c.net == "IB" and c.net_dev in by_index and by_index[c.net_dev].link}),
        })
    judged = [r for r in rows if r.get("verdict") in ("pass", "fail", "warn")]
    if judged:
        big = max(judged, key=lambda r: (r["bytes"], r["op"]))
        for n in big["nodes"]:
            d = out.setdefault(str(n.get("node") or n.get("host")), {"ranks": []})
            d["wire"] = {"op": big["op"], "bytes": big["bytes"], "expected_bytes": n.get("expected_bytes", big["expected_bytes"]),
                         "measured_bytes": n["measured_bytes"], "ratio": n["ratio"],
                         "devices": sorted(list(n["hcas"]) + list(n["netdevs"])), "verdict": big["verdict"]}
    return out


def lossless_by_size(records: list) -> list[dict[str, Any]]:
    """Per (op, size) window: each node's ports and their lossless state (from ``record["wire"]``)."""
    out = []
    for r in records or []:
        wire = r.get("wire") if isinstance(r, dict) else None
        ports = {f"{n.get('host')}:{port}": v.get("state")
                 for n in ((wire or {}).get("nodes") or []) if isinstance(n, dict)
                 for port, v in (n.get("lossless") or {}).items() if isinstance(v, dict)}
        if ports:
            out.append({"op": r.get("op"), "bytes": r.get("bytes"), "ports": ports})
    return out


def _link(v: str | None) -> str | None:
    if not v:
        return "RoCE"
    return None if v.strip().lower() == "any" else v.strip()


def _load_preflight(spec: str | None):
    if not spec:
        return None
    from rdmacheck.evidence.jsonout import read_evidence

    files = [s for s in re.split(r"[,%s]" % re.escape(os.pathsep), spec) if s.strip()]
    return [read_evidence(f.strip()) for f in files]


def _gather(obj: Any) -> list[Any]:
    """all_gather_object when torch.distributed is up with several ranks, else [obj]."""
    try:
        import torch.distributed as dist
    except ImportError:
        return [obj]
    if not dist.is_initialized() or dist.get_world_size() < 2:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def install(hooks) -> None:
    """Entry for ``rdmacheck bench --hook rdmacheck.bench.path_proof:install``."""
    PathProof().install(hooks)
