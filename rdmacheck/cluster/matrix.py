"""The pairwise link matrix: node-by-node sendrecv busbw, judged.

Pure functions over plain data so the tests check them exactly
(``context.pairwise = {nodes, busbw, errors, expected, flagged, ...}``); the
heatmap that draws it is an output (rdmacheck/output/heatmap.py).
"""

from __future__ import annotations

import statistics
from typing import Any

from rdmacheck.evidence.model import Result, Status


def empty(nodes: list[str]) -> list[list[float | None]]:
    return [[None] * len(nodes) for _ in nodes]


def judge(nodes: list[str], busbw: list[list[float | None]], errors: dict[str, str], expected: float,
          outlier_factor: float = 0.5) -> tuple[dict[str, Any], Result]:
    """Flag links below ``expected`` GB/s (FAIL) and links below ``outlier_factor`` x the median
    of the measured links (WARN: the one bad cable hides in an all-reduce average, not here).

    ``errors`` maps "a|b" (the pair in node order) to why it was not measured.
    Returns (``context.pairwise`` dict, the ``cluster.pairwise`` Result).
    """
    n = len(nodes)
    vals = [busbw[i][j] for i in range(n) for j in range(i + 1, n) if busbw[i][j] is not None]
    med = statistics.median(vals) if vals else None
    flagged: list[dict[str, Any]] = []
    for i in range(n):
        for j in range(i + 1, n):
            v = busbw[i][j]
            key = f"{nodes[i]}|{nodes[j]}"
            if v is None:
                flagged.append({"a": nodes[i], "b": nodes[j], "busbw": None, "why": f"not measured: {errors.get(key, 'unknown')}"})
            elif v < expected:
                flagged.append({"a": nodes[i], "b": nodes[j], "busbw": v, "why": f"below expected {expected:g} GB/s"})
            elif med and v < outlier_factor * med:
                flagged.append({"a": nodes[i], "b": nodes[j], "busbw": v,
                                "why": f"below {outlier_factor:g} x the median link ({med:.2f} GB/s)", "warn": True})
    total = n * (n - 1) // 2
    data = {"nodes": list(nodes), "busbw": busbw, "expected": expected, "median": med, "outlier_factor": outlier_factor,
            "measured": len(vals), "pairs": total, "flagged": flagged, "errors": dict(errors)}
    hard = [f for f in flagged if not f.get("warn")]
    expected_txt = f"all {total} pair(s) measured, sendrecv busbw >= {expected:g} GB/s on every link"
    if total == 0:
        return data, Result("cluster.pairwise", Status.SKIP, observed=f"{n} node(s): no pair to measure",
                            expected=expected_txt, remedy="pairwise needs at least two nodes")
    if not flagged:
        obs = f"{len(vals)} of {total} pair(s) measured; min {min(vals):.2f}, median {med:.2f} GB/s" if vals else "no pairs"
        return data, Result("cluster.pairwise", Status.PASS, observed=obs, expected=expected_txt, details={"median": med})
    names = "; ".join(f"{f['a']}<->{f['b']} " + (f"{f['busbw']:.2f} GB/s " if f["busbw"] is not None else "") + f"({f['why']})"
                      for f in flagged[:5])
    more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
    status = Status.FAIL if hard else Status.WARN
    return data, Result(
        "cluster.pairwise", status,
        observed=f"{len(vals)} of {total} pair(s) measured; flagged: {names}{more}",
        expected=expected_txt,
        remedy="a link flagged on one pair only is that pair's cable, port or switch path: reseat or swap it, "
               "check its NIC counters (ethtool -S) and PFC; a node in every flagged pair is that node's NIC or config",
        details={"flagged": flagged[:50]},
    )


def to_csv(nodes: list[str], busbw: list[list[float | None]]) -> str:
    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    lines = ["node," + ",".join(q(x) for x in nodes)]
    for i, a in enumerate(nodes):
        lines.append(q(a) + "," + ",".join("" if v is None else f"{v:.4f}" for v in busbw[i]))
    return "\n".join(lines) + "\n"
