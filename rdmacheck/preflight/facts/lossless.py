"""Is the fabric lossless?  One verdict from the counter deltas of one window.

Pure: deltas in, verdict out; no host read.  ``rdmacheck counters``, the bench's per-size counter
windows (``bench/path_proof.py``), ``rdmacheck watch`` (between two cycles) and any later command that
takes two counter readings call :func:`verdict` (one set of deltas) or :func:`port_verdicts` (a
``facts.counters.sample_delta`` result and the port -> netdev map).

The four states, worst last:

=============  ===========================================================================================
``lossless``   no retransmit, pause, CNP/ECN or drop counter moved: lossless and uncongested
``congested``  pause frames or congestion notifications (CNP/ECN) rose and no retransmit did: lossless
               under congestion (PFC and DCQCN doing their job)
``lossy``      out-of-sequence, sequence-error (NAK), retransmit or ACK-timeout counters rose: packets were
               lost and recovered by go-back-N (every packet after the lost one is sent again, and a lost
               tail waits for the ACK timeout: that is what loss costs in the tail)
``broken``     a pause storm or a buffer overrun / discard: the lossless contract is broken (the fabric
               dropped what it promised not to drop, or flow control shut a port off)
=============  ===========================================================================================

``unknown``: none of the counters that tell loss was there (no retransmit counter readable), so nothing
can be said.

Counter names are the kernel's own, exactly (first match wins):

* rxe (soft-RoCE) ``hw_counters`` (drivers/infiniband/sw/rxe/rxe_hw_counters.c): ``duplicate_request``,
  ``out_of_seq_request``, ``rcvd_seq_err``, ``completer_retry_err``, ``retry_exceeded_err`` (loss);
  ``rcvd_rnr_err``, ``send_rnr_err``, ``retry_rnr_exceeded_err`` (receiver not ready: the application,
  not the fabric); ``link_downed``; ``sent_pkts``/``rcvd_pkts`` (traffic).
* mlx5 ``hw_counters`` (drivers/infiniband/hw/mlx5/counters.c): ``out_of_sequence``, ``packet_seq_err``,
  ``implied_nak_seq_err``, ``local_ack_timeout_err``, ``duplicate_request``, ``roce_adp_retrans``,
  ``roce_adp_retrans_to``, ``roce_slow_restart``, ``roce_slow_restart_trans``,
  ``req_transport_retries_exceeded`` (loss); ``np_cnp_sent``, ``np_ecn_marked_roce_packets``,
  ``rp_cnp_handled``, ``rp_cnp_ignored``, ``cc_rx_cnp_pkts``, ``cc_tx_cnp_pkts``, ``cc_rx_ce_pkts``,
  ``roce_slow_restart_cnps`` (congestion notification); ``out_of_buffer`` (drop: no receive buffer);
  ``rnr_nak_retry_err``, ``req_rnr_retries_exceeded`` (receiver not ready).
* mlx5 ethtool statistics (Documentation/networking/device_drivers/ethernet/mellanox/mlx5/counters.rst):
  ``rx_prio<p>_pause``, ``tx_prio<p>_pause`` (+ ``_duration``, ``_transition``), ``rx_pause_ctrl_phy``,
  ``tx_pause_ctrl_phy``, ``rx_global_pause``, ``tx_global_pause`` (pause); ``rx_prio<p>_marked``,
  ``rx_ecn_mark`` (ECN); ``tx_pause_storm_warning_events``, ``tx_pause_storm_error_events`` (pause storm);
  ``rx_discards_phy``, ``tx_discards_phy``, ``rx_prio<p>_discards``, ``rx_prio<p>_buf_discard``,
  ``rx_prio<p>_cong_discard``, ``rx_out_of_buffer``, ``dev_out_of_buffer``, ``outbound_pci_buffer_overflow``
  (buffer overrun / discard); ``rx_crc_errors_phy``, ``rx_symbol_err_phy``, ``rx_pcs_symbol_err_phy``,
  ``link_down_events_phy`` (link errors).  ``rx_prio<p>_pause`` exists **only while PFC is on for p**
  (counters.rst: "available only if PFC was enabled on priority p"): where a netdev's priority counters
  were read (``rx_prio<p>_bytes``) but no ``rx_prio<p>_pause`` is among them, PFC is off on every
  priority, and the verdict says so.
* IB PortCounters (``counters/``): ``symbol_error``, ``link_error_recovery``, ``link_downed``,
  ``local_link_integrity_errors``, ``port_rcv_errors`` (link errors: packets corrupted or lost on the
  wire); ``excessive_buffer_overrun_errors``, ``port_xmit_discards`` (buffer overrun / discard);
  ``port_xmit_wait`` (credit back-pressure: InfiniBand's pause).

A counter that went down (reset) or saturated in the window has no delta (None, see
``facts.counters.counter_delta``): it is listed under ``reset`` and judged as unknown, never as zero.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

LOSSLESS = "lossless"
CONGESTED = "congested"
LOSSY = "lossy"
BROKEN = "broken"
UNKNOWN = "unknown"
# Gauge values (rdmacheck_lossless_state): worse is larger; unknown exports no value.
STATE_VALUE = {LOSSLESS: 0, CONGESTED: 1, LOSSY: 2, BROKEN: 3}
STATES = (LOSSLESS, CONGESTED, LOSSY, BROKEN, UNKNOWN)

# classes of counters
RETRANSMIT = "retransmit"   # loss recovered end to end (go-back-N)
LINK = "link"               # errors on the wire (corrupted frames are dropped, then retransmitted)
PAUSE = "pause"             # link-level flow control (PFC / global pause; IB credit wait)
CNP = "cnp_ecn"             # congestion notification (ECN marks, CNPs): end-to-end congestion control
STORM = "pause_storm"       # a port sent pause so long the NIC gave up on it
OVERRUN = "overrun"         # dropped for lack of buffer: what a lossless fabric must not do
RNR = "rnr"                 # receiver not ready: the application posted no receive (not the fabric)
CLASSES = (RETRANSMIT, LINK, PAUSE, CNP, STORM, OVERRUN, RNR)

_P = r"\d+"
_EXACT: dict[str, str] = {}
for _cls, _names in (
    (RETRANSMIT, (
        # rxe
        "duplicate_request", "out_of_seq_request", "rcvd_seq_err", "completer_retry_err", "retry_exceeded_err",
        # mlx5 (duplicate_request shared with rxe)
        "out_of_sequence", "packet_seq_err", "implied_nak_seq_err", "local_ack_timeout_err",
        "roce_adp_retrans", "roce_adp_retrans_to", "roce_slow_restart", "roce_slow_restart_trans",
        "req_transport_retries_exceeded")),
    (LINK, ("symbol_error", "link_error_recovery", "link_downed", "local_link_integrity_errors", "port_rcv_errors",
            "rx_crc_errors_phy", "rx_symbol_err_phy", "rx_pcs_symbol_err_phy", "link_down_events_phy")),
    (PAUSE, ("rx_pause_ctrl_phy", "tx_pause_ctrl_phy", "rx_global_pause", "tx_global_pause",
             "rx_global_pause_duration", "tx_global_pause_duration", "port_xmit_wait")),
    (CNP, ("np_cnp_sent", "np_ecn_marked_roce_packets", "rp_cnp_handled", "rp_cnp_ignored", "cc_rx_cnp_pkts",
           "cc_tx_cnp_pkts", "cc_rx_ce_pkts", "roce_slow_restart_cnps", "rx_ecn_mark")),
    (STORM, ("tx_pause_storm_warning_events", "tx_pause_storm_error_events")),
    (OVERRUN, ("out_of_buffer", "rx_out_of_buffer", "dev_out_of_buffer", "rx_discards_phy", "tx_discards_phy",
               "outbound_pci_buffer_overflow", "excessive_buffer_overrun_errors", "port_xmit_discards")),
    (RNR, ("rcvd_rnr_err", "send_rnr_err", "retry_rnr_exceeded_err", "rnr_nak_retry_err", "req_rnr_retries_exceeded")),
):
    for _n in _names:
        _EXACT[_n] = _cls
_PATTERNS = (
    (re.compile(rf"^[rt]x_prio({_P})_pause(_duration|_transition)?$"), PAUSE),
    (re.compile(rf"^rx_prio({_P})_marked$"), CNP),
    (re.compile(rf"^rx({_P})_ecn_mark$"), CNP),
    (re.compile(rf"^rx_prio({_P})_(discards|buf_discard|cong_discard)$"), OVERRUN),
)
_PRIO_TRAFFIC = re.compile(rf"^rx_prio({_P})_(bytes|packets)$")
_RX_PRIO_PAUSE = re.compile(rf"^rx_prio({_P})_pause$")
# counters that exhaust the retries: the QP went to the error state (the job sees a completion error)
EXHAUSTED = ("retry_exceeded_err", "req_transport_retries_exceeded")
# packet counters of the window (the port's), for the ratio of retransmit events to packets
_PACKETS = ("sent_pkts", "rcvd_pkts", "port_xmit_packets", "port_rcv_packets")


def counter_class(name: str) -> str | None:
    """The class of a counter by its kernel name (a ``hw_counters/`` or ``counters/`` prefix is dropped)."""
    n = name.rsplit("/", 1)[-1]
    c = _EXACT.get(n)
    if c is not None:
        return c
    for rx, cls in _PATTERNS:
        if rx.match(n):
            return cls
    return None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What one window of counters says about loss and congestion."""

    state: str                                   # one of STATES
    summary: str                                 # one sentence, the state in words
    moved: dict[str, dict[str, int]]             # class -> {counter: delta > 0}
    patterns: tuple[str, ...] = ()               # named patterns: "retransmits with no pause", "pause storm" ...
    notes: tuple[str, ...] = ()                  # evidence beside the state (PFC absent, RNR, retries exhausted)
    reset: tuple[str, ...] = ()                  # counters without a delta in the window (reset, saturated)

    @property
    def value(self) -> int | None:
        return STATE_VALUE.get(self.state)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "summary": self.summary, "moved": {k: dict(v) for k, v in self.moved.items()},
                "patterns": list(self.patterns), "notes": list(self.notes), "reset": list(self.reset)}


def _fmt(d: Mapping[str, int]) -> str:
    return ", ".join(f"{k} +{v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))


def pfc_note(names: Iterable[str], priority: int | None = None) -> str | None:
    """What the presence of ``rx_prio<p>_pause`` says (mlx5 creates it only while PFC is on for p).

    None when no per-priority counters were read at all (sysfs alone never has them: they are ethtool
    statistics), since then their absence says nothing."""
    names = [n.rsplit("/", 1)[-1] for n in names]
    prios = {int(m.group(1)) for n in names if (m := _PRIO_TRAFFIC.match(n))}
    if not prios:
        return None
    pfc = sorted({int(m.group(1)) for n in names if (m := _RX_PRIO_PAUSE.match(n))})
    if priority is not None:
        if priority in pfc:
            return f"PFC is on for priority {priority} (rx_prio{priority}_pause exists)"
        return (f"PFC is off for priority {priority}: no rx_prio{priority}_pause counter (mlx5 creates it only "
                "while PFC is enabled on that priority)")
    if not pfc:
        return ("PFC is off on every priority: per-priority counters were read but no rx_prio<p>_pause exists "
                "(mlx5 creates it only while PFC is enabled on p)")
    return "PFC is on for priority " + ", ".join(str(p) for p in pfc) + " (rx_prio<p>_pause exists)"


def verdict(deltas: Mapping[str, int | None], present: Iterable[str] | None = None,
            priority: int | None = None) -> Verdict:
    """The verdict of one window.

    ``deltas``: counter name -> delta over the window (None: reset or saturated), names as the kernel
    spells them, optionally prefixed (``hw_counters/rcvd_seq_err``).  ``present``: every counter name that
    exists (default: the keys of ``deltas``), for the absence of ``rx_prio<p>_pause``.  ``priority``: the
    priority RoCE runs on, when known (NCCL_IB_TC -> DSCP -> priority, ``rdma.pfc``).
    """
    moved: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    reset: list[str] = []
    packets = 0
    for raw, v in deltas.items():
        name = raw.rsplit("/", 1)[-1]
        if name in _PACKETS and isinstance(v, int):
            packets += v
        cls = counter_class(name)
        if cls is None:
            continue
        seen.add(cls)
        if v is None:
            reset.append(raw)
        elif v > 0:
            moved.setdefault(cls, {})[raw] = v
    notes: list[str] = []
    names = list(present) if present is not None else list(deltas)
    pn = pfc_note(names, priority)
    if pn:
        notes.append(pn)
    if RNR in moved:
        notes.append(f"receiver-not-ready NAKs ({_fmt(moved[RNR])}): a receiver had no buffer posted; the "
                     "application's, not the fabric's")
    gave_up = {k: v for k, v in moved.get(RETRANSMIT, {}).items() if k.rsplit("/", 1)[-1] in EXHAUSTED}
    if gave_up:
        notes.append(f"retries exhausted ({_fmt(gave_up)}): a queue pair went to the error state; the job saw a "
                     "completion error")
    if reset:
        notes.append("counter(s) reset or saturated in the window, not judged: " + ", ".join(sorted(reset)))
    patterns: list[str] = []
    flow = {**moved.get(PAUSE, {}), **moved.get(CNP, {})}
    if STORM in moved or OVERRUN in moved:
        why = []
        if STORM in moved:
            patterns.append("pause storm")
            why.append(f"pause storm ({_fmt(moved[STORM])}): a port sent pause so long that the NIC stopped "
                       "honouring it")
        if OVERRUN in moved:
            patterns.append("buffer overrun")
            why.append(f"packets dropped for lack of buffer ({_fmt(moved[OVERRUN])})")
        state = BROKEN
        summary = "the lossless contract is broken: " + "; ".join(why)
    elif RETRANSMIT in moved or LINK in moved:
        state = LOSSY
        rt = {**moved.get(RETRANSMIT, {}), **moved.get(LINK, {})}
        events = sum(moved.get(RETRANSMIT, {}).values())
        ratio = f" ({events} retransmit-counter increments over {packets} packets)" if packets and events else ""
        if not flow:
            patterns.append("retransmits with no pause")
        if LINK in moved:
            patterns.append("link errors")
        summary = (f"lossy: packets were lost and recovered by go-back-N ({_fmt(rt)}){ratio}; every packet after a "
                   "lost one is sent again and a lost tail waits for the ACK timeout, which is what loss costs in "
                   "the tail")
        if not flow:
            summary += "; retransmits with no pause: nothing held the sender back, so the loss is not congestion " \
                       "that PFC absorbed (PFC off on this priority, or the drop is upstream of it)"
        else:
            summary += f"; flow control rose too ({_fmt(flow)}), yet packets were still lost"
    elif flow:
        state = CONGESTED
        kinds = []
        if PAUSE in moved:
            patterns.append("pause")
            kinds.append("pause")
        if CNP in moved:
            patterns.append("congestion notification")
            kinds.append("CNP/ECN")
        summary = (f"lossless under congestion: {' and '.join(kinds)} rose ({_fmt(flow)}) with no retransmit: flow "
                   "control held the senders back and nothing was lost")
    elif RETRANSMIT not in seen:
        state = UNKNOWN
        summary = ("no retransmit counter was readable in the window (this driver exposes none in sysfs): loss "
                   "cannot be judged")
    elif reset and not moved:
        state = UNKNOWN
        summary = "counters reset in the window: no verdict"
    else:
        state = LOSSLESS
        summary = "lossless and uncongested: no retransmit, pause, CNP/ECN or drop counter moved"
    return Verdict(state=state, summary=summary, moved=moved, patterns=tuple(patterns), notes=tuple(notes),
                   reset=tuple(sorted(reset)))


def worst(verdicts: Iterable[Verdict]) -> str:
    """The worst state among verdicts (unknown only when none is known)."""
    order = {s: i for i, s in enumerate((LOSSLESS, CONGESTED, LOSSY, BROKEN))}
    known = [v.state for v in verdicts if v.state in order]
    return max(known, key=order.__getitem__) if known else UNKNOWN


# ---------------------------------------------------------------- windows of a whole sample


def _pkey(port: str) -> str:
    """"dev:1" and "dev/1" name the same port."""
    return port.replace(":", "/")


def port_windows(delta: Mapping[str, Any], port_netdevs: Mapping[str, list[str]] | None = None
                 ) -> dict[str, dict[str, int | None]]:
    """``facts.counters.sample_delta`` -> {port "dev/p": every counter of the port and of its netdev(s)}.

    Port counters keep their folder (``hw_counters/rcvd_seq_err``), netdev ones their netdev
    (``enp1s0f0np0/rx_prio3_pause``), so a name says where it was read."""
    nd_map = {_pkey(k): v for k, v in (port_netdevs or {}).items()}
    out: dict[str, dict[str, int | None]] = {}
    for key, pd in (delta.get("ports") or {}).items():
        w: dict[str, int | None] = {}
        for fam in ("counters", "hw_counters"):
            for n, v in (pd.get(fam) or {}).items():
                w[f"{fam}/{n}"] = v
        for nd in nd_map.get(key, []):
            for n, v in ((delta.get("netdevs") or {}).get(nd, {}).get("stats") or {}).items():
                w[f"{nd}/{n}"] = v
            for n, v in ((delta.get("ethtool") or {}).get(nd) or {}).items():
                w[f"{nd}/{n}"] = v
        out[key] = w
    return out


def port_verdicts(delta: Mapping[str, Any], port_netdevs: Mapping[str, list[str]] | None = None,
                  priority: int | None = None) -> dict[str, Verdict]:
    """One verdict per RDMA port of a ``sample_delta`` result (its counters and its netdev's)."""
    return {k: verdict(w, priority=priority) for k, w in port_windows(delta, port_netdevs).items()}


# ---------------------------------------------------------------- where did the bytes go (cross-row patterns)

# A netdev must receive at least this much in the window before "the port got nothing" is news: a quiet
# netdev still sees ARP and IPv6 neighbour traffic (a few hundred bytes a second).
MIN_BYTES = 100_000


@dataclasses.dataclass(frozen=True)
class Finding:
    port: str
    pattern: str     # "port received 0 packets", "bytes arrived on another netdev"
    text: str        # the line `rdmacheck counters` prints

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _fmt_bytes(n: int) -> str:
    for unit, d in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= d:
            return f"{n / d:.1f} {unit}"
    return f"{n} B"


def findings(delta: Mapping[str, Any], port_netdevs: Mapping[str, list[str]] | None = None,
             min_bytes: int = MIN_BYTES) -> list[Finding]:
    """Patterns across rows: RoCE that reached the host but not the RDMA port.

    * "port received 0 packets while its netdev received N bytes": the frames arrived at the port's own
      netdev, yet the RDMA stack counted none (a firewall on UDP 4791, a VLAN/GID mismatch, RoCE
      disabled): RoCE dropped before the RDMA stack.  (For rxe the netdev carries the RoCE bytes; on a
      hardware RoCE NIC the netdev counts only what the NIC did not take as RoCE, which makes the
      pattern all the more telling.)
    * "bytes arrived on another netdev": the port sent packets but received none and its own netdev little,
      while another interface received at least ``min_bytes``: the peer answers to the wrong MAC (a stale
      neighbour entry, a GID on the wrong interface).
    """
    nd_map = {_pkey(k): v for k, v in (port_netdevs or {}).items()}
    netdevs = delta.get("netdevs") or {}
    ports = delta.get("ports") or {}
    out: list[Finding] = []
    explained: set[str] = set()   # netdevs whose bytes a "0 packets at the port" finding already accounts for
    silent = []
    for key, pd in sorted(ports.items()):
        if pd.get("rx_packets") != 0:
            continue
        own = [n for n in nd_map.get(key, []) if n in netdevs]
        own_bytes = sum(netdevs[n].get("rx_bytes") or 0 for n in own)
        if own and own_bytes >= min_bytes:
            names = "/".join(own)
            explained.update(own)
            out.append(Finding(key, "port received 0 packets",
                               f"port {key} received 0 packets while its netdev {names} received {own_bytes} bytes "
                               f"({_fmt_bytes(own_bytes)}): RoCE was dropped before the RDMA stack (a firewall on "
                               "UDP 4791, a VLAN or GID mismatch, RoCE disabled on the NIC)"))
        elif pd.get("tx_packets"):  # an idle port: traffic elsewhere is someone else's
            silent.append((key, pd, own, own_bytes))
    for key, pd, own, own_bytes in silent:
        others = sorted(((n, d.get("rx_bytes") or 0) for n, d in netdevs.items()
                         if n not in own and n not in explained and n != "lo" and (d.get("rx_bytes") or 0) >= min_bytes),
                        key=lambda kv: -kv[1])
        if others:
            n, b = others[0]
            out.append(Finding(key, "bytes arrived on another netdev",
                               f"port {key} sent {pd.get('tx_packets')} packets and received 0, its netdev {'/'.join(own) or '(none)'} "
                               f"{own_bytes} bytes, but {b} bytes ({_fmt_bytes(b)}) arrived on another netdev, {n}: "
                               "the peer sends to the wrong MAC (stale neighbour entry, GID on another interface)"))
    return out
