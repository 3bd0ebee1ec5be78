"""A window of counters around a piece of work: the RDMA ports' counters and their netdevs' (sysfs, through
the root), plus the netdevs' driver statistics (ethtool; live only), read before and after, and judged by
facts.lossless.  `rdmacheck counters` judges its interval this way and `rdmacheck link` each of its runs.
"""

from __future__ import annotations

from typing import Any

from rdmacheck.preflight.facts.counters import CounterSample, read_sample, sample_delta
from rdmacheck.preflight.root import HostRoot


def judge(before: CounterSample, after: CounterSample, port_netdevs: dict[str, list[str]],
          eth: dict[str, dict[str, int | None]] | None = None):
    """(verdict per port, cross-row findings) of one window; ``eth``: the ethtool deltas of the netdevs."""
    from rdmacheck.preflight.facts.lossless import findings, port_verdicts

    delta = sample_delta(before, after)
    if eth:
        delta["ethtool"] = eth
    return port_verdicts(delta, port_netdevs), findings(delta, port_netdevs)


class Window:
    """``with Window(root, {"dev/1": ["netdev"]}) as w: work()`` -> ``w.verdicts`` (port -> Verdict) and
    ``w.findings``.  Only the named ports and netdevs are read: a run's window is its own ports'."""

    def __init__(self, root: HostRoot, port_netdevs: dict[str, list[str]]) -> None:
        self.root = root
        self.port_netdevs = {k.replace(":", "/"): list(v) for k, v in port_netdevs.items()}
        self.devices = sorted({k.split("/")[0] for k in self.port_netdevs})
        self.netdevs = sorted({n for v in self.port_netdevs.values() for n in v})
        self.verdicts: dict[str, Any] = {}
        self.findings: list[Any] = []
        self._before: tuple[CounterSample, dict] | None = None

    def _read(self) -> tuple[CounterSample, dict]:
        from rdmacheck.preflight.facts.ethtool import read_many

        # driver statistics are an ioctl on this host: a replayed or copied tree has none
        return read_sample(self.root, self.devices, self.netdevs), (read_many(self.netdevs) if self.root.live else {})

    def __enter__(self) -> "Window":
        self._before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        from rdmacheck.preflight.facts.ethtool import delta as eth_delta

        if self._before is None:
            return
        (b, eb), (a, ea) = self._before, self._read()
        v, f = judge(b, a, self.port_netdevs, eth_delta(eb, ea) if self.root.live else None)
        self.verdicts = {k: x for k, x in v.items() if k in self.port_netdevs}
        self.findings = f

