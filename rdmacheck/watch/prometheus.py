"""Prometheus exposition of ``rdmacheck watch``'s latest state (the maintained ``prometheus-client`` library).

A custom collector turns the latest :class:`~rdmacheck.watch.State` into metric
families at scrape time: a scrape only formats what the last cycle found, and
a gate or port that disappears disappears from /metrics with it (no stale
label sets left behind by long-lived gauge objects).

Metrics (docs/watch.md lists them with examples):

* ``rdmacheck_gate_status{gate}``: 0 pass, 1 warn, 2 fail, 3 skip
* ``rdmacheck_netdev_mtu{netdev}``, ``rdmacheck_netdev_up{netdev}``
* ``rdmacheck_port_active_mtu{port,netdev}``, ``rdmacheck_port_gid_index{port}`` (the predicted index),
  ``rdmacheck_port_up{port}`` (state ACTIVE)
* ``rdmacheck_counter_total{kind,device,counter,category}`` and
  ``rdmacheck_counter_rate{...}`` (per second between the last two cycles)
* the health facts (``rdmacheck_gpu_*``, ``rdmacheck_nic_*``) and ``rdmacheck_lossless_state{port}``
  (``watch/health.py``)
* ``rdmacheck_last_run_timestamp_seconds``, ``rdmacheck_run_duration_seconds``, ``rdmacheck_runs_total``,
  ``rdmacheck_run_error`` (1 when the last cycle could not run)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from . import STATUS_VALUE, State


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


class StateCollector:
    """prometheus_client collector over ``get_state()`` (None before the first cycle: nothing but up)."""

    def __init__(self, get_state: Callable[[], State | None]) -> None:
        self.get_state = get_state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.get_state()
        if st is None:
            return
        g = GaugeMetricFamily("rdmacheck_gate_status", "Gate status: 0 pass, 1 warn, 2 fail, 3 skip", labels=["gate"])
        for r in st.results:
            g.add_metric([r.id], STATUS_VALUE[r.status])
        yield g

        facts = st.facts if isinstance(st.facts, dict) else {}
        mtu = GaugeMetricFamily("rdmacheck_netdev_mtu", "netdev MTU (bytes)", labels=["netdev"])
        up = GaugeMetricFamily("rdmacheck_netdev_up", "netdev operationally up with carrier (1) or not (0)", labels=["netdev"])
        for name, d in sorted((facts.get("netdevs") or {}).items()):
            if not isinstance(d, dict):
                continue
            v = _num(d.get("mtu"))
            if v is not None:
                mtu.add_metric([name], v)
            if d.get("up") is not None:
                up.add_metric([name], 1.0 if d.get("up") else 0.0)
        yield mtu
        yield up

        amtu = GaugeMetricFamily("rdmacheck_port_active_mtu", "RoCE/IB active MTU of a selected port (bytes)",
                                 labels=["port", "netdev"])
        gid = GaugeMetricFamily("rdmacheck_port_gid_index", "GID index NCCL is predicted to use on the port", labels=["port"])
        pup = GaugeMetricFamily("rdmacheck_port_up", "RDMA port state ACTIVE (1) or not (0)", labels=["port"])
        for p in facts.get("ports") or []:
            if not isinstance(p, dict) or not p.get("port"):
                continue
            port = str(p["port"])
            v = _num(p.get("active_mtu"))
            if v is not None:
                amtu.add_metric([port, str(p.get("netdev") or "")], v)
            gi = p.get("gid") if isinstance(p.get("gid"), dict) else {}
            v = _num(gi.get("predicted", p.get("gid_index")))
            if v is not None:
                gid.add_metric([port], v)
            if p.get("state"):
                pup.add_metric([port], 1.0 if str(p["state"]).upper().endswith("ACTIVE") else 0.0)
        yield amtu
        yield gid
        yield pup

        labels = ["kind", "device", "counter", "category"]
        total = CounterMetricFamily("rdmacheck_counter", "Watched RDMA port / netdev counter, raw value", labels=labels)
        rate = GaugeMetricFamily("rdmacheck_counter_rate", "Watched counter, per second between the last two cycles",
                                 labels=labels)
        for c in st.counters:
            lv = [c.kind, c.device, c.counter, c.category]
            total.add_metric(lv, c.value)
            if c.rate is not None:
                rate.add_metric(lv, c.rate)
        yield total
        yield rate

        from .health import health_families  # GPU/NIC health, Xid events, the lossless state (docs/watch.md)

        yield from health_families(st)

        yield GaugeMetricFamily("rdmacheck_last_run_timestamp_seconds", "When the last cycle finished (unix time)", value=st.time)
        yield GaugeMetricFamily("rdmacheck_run_duration_seconds", "How long the last cycle took", value=st.duration)
        yield CounterMetricFamily("rdmacheck_runs", "Cycles run since start", value=st.cycles)
        yield GaugeMetricFamily("rdmacheck_run_error", "1 when the last cycle could not run (gates keep the previous values)",
                                value=1.0 if st.error else 0.0)


def serve(get_state: Callable[[], State | None], host: str, port: int):
    """Start the /metrics HTTP server on a daemon thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(get_state))
    return start_http_server(port, addr=host, registry=registry)
