"""Bench runs: records -> tables, CSV, plateau and plots.

Records from ``rdmacheck bench`` and from imported nccl-tests output share one
shape (``op, bytes, busbw, algbw, time_us, in_place, ...``), so both go into
one DataFrame and onto the same axes.  One figure per collective, never per
node: a 512-node report has the same number of plots as a 2-node one.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import warnings
from typing import Any

from rdmacheck.evidence.schema import BenchRecord
from rdmacheck.nccl.plateau import DEFAULT_MIN_BYTES, Plateau, plateaus
from rdmacheck.util.units import short_bytes, tick_bytes


@dataclasses.dataclass
class Run:
    label: str              # legend / table title
    source: str             # "rdmacheck" or "nccl-tests"
    path: str
    host: str
    time: str
    context: dict[str, Any]
    records: list[BenchRecord]   # typed: every reader's evidence and every import passed evidence.schema
    # the bench's plateau threshold (its context.plateau_min_bytes); imported nccl-tests runs
    # carry none and are judged at the profile default
    plateau_min_bytes: int = DEFAULT_MIN_BYTES


def _float(v: float | int | None) -> float | None:
    return None if v is None else float(v)


def frame(runs: list[Run]):
    """All records of all runs as one DataFrame (pandas imported here, not at module import)."""
    import pandas as pd

    rows = []
    for i, run in enumerate(runs):
        for r in run.records:
            rows.append({
                "run": run.label, "run_index": i, "source": run.source,
                "op": r.op or "unknown", "bytes": r.bytes, "in_place": r.in_place,
                "time_us": _float(r.time_us), "algbw": _float(r.algbw), "busbw": _float(r.busbw),
                "wrong": r.wrong, "dtype": r.dtype, "redop": r.redop,
                "world_size": r.world_size, "backend": r.backend,
                "plateau_min_bytes": run.plateau_min_bytes,
            })
    cols = ["run", "run_index", "source", "op", "bytes", "in_place", "time_us", "algbw", "busbw",
            "wrong", "dtype", "redop", "world_size", "backend", "plateau_min_bytes"]
    return pd.DataFrame(rows, columns=cols)


def primary(df):
    """Per (run, op) the out-of-place rows, or the in-place ones where a run has only those
    (torch.distributed collectives such as gloo's all_reduce are in-place only)."""
    if df.empty:
        return df
    has_oop = df[~df["in_place"]].groupby(["run_index", "op"]).size()
    keys = set(has_oop.index)
    mask = [((ri, op) in keys) != ip for ri, op, ip in zip(df["run_index"], df["op"], df["in_place"])]
    return df[mask]


def plateau(g, min_bytes: int) -> Plateau | None:
    """The plateau of one run's one op (every variant's rows): the bench gate's own figure."""
    recs = [{"op": "op", "bytes": b, "busbw": bw} for b, bw in zip(g["bytes"], g["busbw"])]
    return plateaus(recs, min_bytes).get("op")


def summaries(df, expected: float | None) -> list[dict[str, Any]]:
    """One row per (run, op): peak, plateau, verdict against the expected line."""
    out = []
    if df.empty:
        return out
    for (idx, op), g in primary(df).groupby(["run_index", "op"], sort=True):
        g = g.sort_values("bytes")
        whole = df[(df["run_index"] == idx) & (df["op"] == op)]
        pl = plateau(whole, int(whole["plateau_min_bytes"].iloc[0]))
        peak = g["busbw"].max()
        out.append({
            "run": g["run"].iloc[0], "op": op, "source": g["source"].iloc[0], "rows": int(len(g)),
            "min_bytes": short_bytes(int(g["bytes"].min())), "max_bytes": short_bytes(int(g["bytes"].max())),
            "peak_busbw": None if peak != peak else float(peak),
            "plateau": None if pl is None else f"{short_bytes(pl.first_bytes)}..{short_bytes(pl.last_bytes)}",
            "plateau_busbw": None if pl is None else pl.median,
            "meets": None if (pl is None or expected is None) else pl.median >= expected,
            "wrong": int(g["wrong"].fillna(0).astype(float).sum()) if g["wrong"].notna().any() else None,
        })
    return out


def tables(df) -> list[dict[str, Any]]:
    """Per (run, op): rows of size, count, out-of-place and in-place time/algbw/busbw/#wrong."""
    import pandas as pd

    out = []
    if df.empty:
        return out
    for (idx, op), g in df.groupby(["run_index", "op"], sort=True):
        oop = g[~g["in_place"]].drop_duplicates("bytes", keep="last").set_index("bytes")
        ip = g[g["in_place"]].drop_duplicates("bytes", keep="last").set_index("bytes")
        sizes = sorted(set(oop.index) | set(ip.index))
        t = pd.DataFrame(index=sizes)
        for name, part in (("oop", oop), ("ip", ip)):
            for col in ("time_us", "algbw", "busbw", "wrong"):
                t[f"{name}_{col}"] = part[col] if col in part else None
        rows = []
        for size, r in t.iterrows():
            rows.append({"bytes": int(size), "size": short_bytes(int(size)),
                         **{k: (None if v != v else v) for k, v in r.to_dict().items()}})
        out.append({"run": g["run"].iloc[0], "op": op, "rows": rows,
                    "has_ip": bool(len(ip))})
    return out


def csv_data_uri(df) -> str:
    cols = ["run", "source", "op", "bytes", "in_place", "time_us", "algbw", "busbw", "wrong",
            "dtype", "redop", "world_size", "backend"]
    text = df[cols].to_csv(index=False) if not df.empty else ",".join(cols) + "\n"
    return "data:text/csv;base64," + base64.b64encode(text.encode()).decode()


def _plain(text: object) -> str:
    """Text for matplotlib: a '$' would start mathtext, and a host name like '$\\frac$'
    makes the renderer raise; escaped, it prints as typed."""
    return str(text).replace("$", r"\$")


def plots(df, expected: float | None, latency_limits: dict[str, list[tuple[int, float]]] | None = None) -> list[dict[str, Any]]:
    """One SVG per collective (busbw | algbw | latency panels), as data URIs.

    ``latency_limits``: per op, the bench.latency ceilings (bytes, us) the run was judged by;
    drawn on the latency panel beside the measured times, with the gate named in the legend.
    """
    if df.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display: report runs on CI boxes and over ssh
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    out = []
    d = primary(df)
    d = d[d["bytes"] > 0]
    for op, g in d.groupby("op", sort=True):
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), constrained_layout=True)
        candidates = []   # (not rdmacheck, run index): the band shows the first rdmacheck run's plateau
        for idx, rg in g.groupby("run_index", sort=True):
            rg = rg.sort_values("bytes")
            label = rg["run"].iloc[0]
            style = "-" if rg["source"].iloc[0] == "rdmacheck" else "--"
            candidates.append((rg["source"].iloc[0] != "rdmacheck", idx))
            for ax, col in zip(axes, ("busbw", "algbw", "time_us")):
                s = rg.dropna(subset=[col])
                if col == "time_us":
                    s = s[s[col] > 0]
                if not s.empty:
                    ax.plot(s["bytes"], s[col], style, marker=".", markersize=3, linewidth=1.2, label=_plain(label))
        pl = None
        for _, idx in sorted(candidates):   # ... else the first run that reached a plateau size
            whole = df[(df["run_index"] == idx) & (df["op"] == op)]
            pl = plateau(whole, int(whole["plateau_min_bytes"].iloc[0]))
            if pl:
                break
        if pl:
            lo, hi, med = pl.first_bytes, pl.last_bytes, pl.median
            axes[0].axvspan(lo, hi, color="tab:green", alpha=0.12,
                            label=f"plateau ({tick_bytes(lo)}..{tick_bytes(hi)}, {med:.1f} GB/s)")
        if expected:
            axes[0].axhline(expected, color="tab:red", linestyle=":", linewidth=1.5,
                            label=f"expected {expected:g} GB/s")
        titles = (("bus bandwidth", "busbw (GB/s)"), ("algorithm bandwidth", "algbw (GB/s)"),
                  ("latency", "time (us)"))
        for ax, (title, ylabel) in zip(axes, titles):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(tick_bytes))
            ax.set_xlabel("message size (bytes)")
            ax.set_ylabel(ylabel)
            ax.set_title(_plain(f"{op}: {title}"))
            ax.grid(True, which="major", alpha=0.3)
        lim = sorted((latency_limits or {}).get(op) or [])
        if lim:
            axes[2].plot([b for b, _ in lim], [us for _, us in lim], "v", color="tab:red", markersize=5,
                         linestyle=":", linewidth=1, label="bench.latency ceiling")
            axes[2].legend(fontsize=7, loc="upper left")
        axes[2].set_yscale("log")  # latency spans decades: log10 reads better than powers of 2
        axes[0].legend(fontsize=7, loc="upper left")
        buf = io.StringIO()
        with warnings.catch_warnings():
            # a host-supplied label may hold glyphs no installed font has: drawn as boxes, fine
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="svg")
        plt.close(fig)
        uri = "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue().encode()).decode()
        out.append({"op": op, "uri": uri, "plateau": None if pl is None else (lo, hi, med), "latency_gate": bool(lim)})
    return out
