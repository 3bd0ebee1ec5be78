"""The pairwise matrix of ``rdmacheck cluster --pairwise`` (``context.pairwise``) drawn as an SVG heatmap.

An output like the console table or JUnit: the cluster driver writes it next to its evidence
(pairwise.svg) and the report embeds it, so it lives here, below both, and neither reaches into
the other for it.  No imaging library: cells are SVG rects, or one embedded PNG above
``RASTER_ABOVE`` nodes.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape


def _color(v: float | None, lo: float, hi: float) -> str:
    if v is None:
        return "#bbbbbb"
    t = 0.0 if hi <= lo else max(0.0, min(1.0, (v - lo) / (hi - lo)))
    # red (slow) -> yellow -> green (fast)
    r = int(215 - 170 * max(0.0, t - 0.5) * 2) if t > 0.5 else 215
    g = int(48 + 150 * min(1.0, t * 2))
    return f"#{r:02x}{g:02x}40"


RASTER_ABOVE = 64   # more nodes than this: the cells become one embedded PNG (512 nodes = 262144 cells)


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    """A minimal RGB PNG (zlib, no filter): no imaging library needed."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _raster(nodes, m, lo, hi, flagged, pad: int, cell: int) -> str:
    import base64

    n = len(nodes)
    rows = []
    for i, a in enumerate(nodes):
        row = bytearray()
        for j, b in enumerate(nodes):
            if i == j:
                row += b"\xff\xff\xff"
                continue
            v = m[i][j] if m[i][j] is not None else m[j][i]
            if (a, b) in flagged or (b, a) in flagged:
                row += b"\x00\x00\x00"  # flagged: black, findable at a glance
            else:
                row += bytes.fromhex(_color(v, lo, hi)[1:])
        rows.append(bytes(row))
    uri = "data:image/png;base64," + base64.b64encode(_png(n, n, rows)).decode()
    return (f'<image x="{pad}" y="{pad}" width="{n * cell}" height="{n * cell}" style="image-rendering:pixelated" '
            f'href="{uri}"><title>{n} x {n} links; black = flagged (see the table)</title></image>')


def heatmap_svg(data: dict[str, Any], cell: int = 0) -> str:
    """A self-contained SVG heatmap of ``context.pairwise`` (autoescaped labels).

    Flagged links get a black frame; unmeasured ones are grey with an x.
    Above ~40 nodes labels are dropped and cells shrink so the picture stays
    a picture.
    """
    nodes = data["nodes"]
    m = data["busbw"]
    n = len(nodes)
    cell = cell or (28 if n <= 16 else 14 if n <= 40 else max(3, 600 // max(n, 1)))
    labels = n <= 40
    pad = (max((len(x) for x in nodes), default=4) * 7 + 10) if labels else 10
    size = pad + n * cell + 10
    vals = [v for row in m for v in row if v is not None]
    lo = min(vals + [data.get("expected") or 0.0]) if vals else 0.0
    hi = max(vals) if vals else 1.0
    flagged = {(f["a"], f["b"]) for f in data.get("flagged", [])}
    # rotated column labels run up and to the right of the last column; the legend needs ~600 px
    width = max(size + (pad if labels else 0), 600)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{size + 30}" font-family="sans-serif" font-size="11">',
           f'<title>pairwise sendrecv busbw (GB/s), {n} nodes</title>']
    for i, a in enumerate(nodes):
        y = pad + i * cell
        if labels:
            out.append(f'<text x="{pad - 4}" y="{y + cell * 0.65:.1f}" text-anchor="end">{escape(a)}</text>')
            out.append(f'<text transform="translate({pad + i * cell + cell * 0.65:.1f},{pad - 4}) rotate(-60)">{escape(a)}</text>')
        if n > RASTER_ABOVE:
            continue
        for j, b in enumerate(nodes):
            x = pad + j * cell
            if i == j:
                out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="#ffffff" stroke="#eeeeee"/>')
                continue
            v = m[i][j] if m[i][j] is not None else m[j][i]
            key = (a, b) if (a, b) in flagged else (b, a)
            stroke = ' stroke="#000000" stroke-width="2"' if key in flagged else ' stroke="#ffffff"'
            tip = f"{a} <-> {b}: " + ("not measured" if v is None else f"{v:.2f} GB/s")
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_color(v, lo, hi)}"{stroke}>'
                       f'<title>{escape(tip)}</title></rect>')
            if v is None and cell >= 10:
                out.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell * 0.7:.1f}" text-anchor="middle">x</text>')
            elif cell >= 28:
                out.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell * 0.62:.1f}" text-anchor="middle" font-size="9">{v:.1f}</text>')
    if n > RASTER_ABOVE:
        out.append(_raster(nodes, m, lo, hi, flagged, pad, cell))
    exp = data.get("expected")
    out.append(f'<text x="4" y="{size + 18}">sendrecv busbw GB/s: red {lo:.2f} .. green {hi:.2f}; '
               f'{"black" if n > RASTER_ABOVE else "framed"} = flagged{f" (expected {exp:g})" if exp is not None else ""}; '
               f'{"grey" if n > RASTER_ABOVE else "grey x"} = not measured</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
