"""One small descriptor per collective over one shared runner.

Modelled on nccl-tests (``src/all_reduce.cu`` and friends): each collective
says how a byte size maps to buffers (``getCollByteCount``), how to turn a
time into algbw/busbw (``getBw``), how to fill inputs deterministically and
what every rank must hold afterwards (``--check``).  The runner knows nothing
about individual collectives.

Sizes follow nccl-tests exactly, so the two tables can be diffed:

* the ``size`` column is the larger of the send and receive buffers in bytes;
* the ``count`` column is the per-call element count nccl passes
  (all_gather/reduce_scatter/alltoall: per rank, rounded down to 16 bytes);
* algbw = size / time; busbw = algbw x factor(n) (rdmacheck/nccl/busbw.py): all_reduce 2(n-1)/n;
  all_gather, reduce_scatter, alltoall (n-1)/n; broadcast, sendrecv 1.

torch is passed in, never imported here at module level.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from rdmacheck.nccl.busbw import FACTORS
from rdmacheck.util.errors import UsageError

# nccl-tests type names -> (torch dtype attribute, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "float": ("float32", 4),
    "half": ("float16", 2),
    "bfloat16": ("bfloat16", 2),
    "double": ("float64", 8),
    "int8": ("int8", 1),
    "uint8": ("uint8", 1),
    "int32": ("int32", 4),
    "int64": ("int64", 8),
}
DTYPE_ALIASES = {"float32": "float", "fp32": "float", "float16": "half", "fp16": "half", "bf16": "bfloat16",
                 "float64": "double", "fp64": "double", "int": "int32", "char": "int8"}

# Input values repeat with this period: a prime, so a block landing at the
# wrong offset shows up as wrong elements.  Values stay small integers
# (1..13, sums <= 13 x ranks) so every dtype holds them exactly.
PERIOD = 13


def dtype_name(text: str) -> str:
    t = text.strip().lower()
    t = DTYPE_ALIASES.get(t, t)
    if t not in DTYPES:
        raise UsageError(f"--dtype: {text!r} is not supported; choose one of {', '.join(DTYPES)}")
    return t


@dataclasses.dataclass(frozen=True)
class Layout:
    """Buffer shape of one collective call at one size (elements per rank)."""

    count: int        # nccl's count argument (nccl-tests' count column)
    send: int         # elements in the send buffer
    recv: int         # elements in the receive buffer

    def nbytes(self, elsize: int) -> int:
        """nccl-tests' size column: the larger buffer in bytes."""
        return max(self.send, self.recv) * elsize


def _flat(size_bytes: int, elsize: int, n: int) -> Layout:
    c = size_bytes // elsize
    return Layout(c, c, c)


def _per_rank(size_bytes: int, elsize: int, n: int) -> int:
    # nccl-tests: base = (count/nranks) & ~(16/eltSize - 1), i.e. 16-byte aligned blocks
    return (size_bytes // elsize // n) & ~(max(16 // elsize, 1) - 1)


def _gather_layout(size_bytes: int, elsize: int, n: int) -> Layout:
    b = _per_rank(size_bytes, elsize, n)
    return Layout(b, b, b * n)


def _scatter_layout(size_bytes: int, elsize: int, n: int) -> Layout:
    b = _per_rank(size_bytes, elsize, n)
    return Layout(b, b * n, b)


def _alltoall_layout(size_bytes: int, elsize: int, n: int) -> Layout:
    b = _per_rank(size_bytes, elsize, n)
    return Layout(b, b * n, b * n)


@dataclasses.dataclass
class Buffers:
    """What one rank allocated for one (op, size, variant)."""

    inp: Any                  # tensor the rank contributes
    out: Any                  # tensor the rank receives (may alias inp)
    call: Callable[[], None]  # issues the collective once (enqueue only on GPU)
    fill: Callable[[], None]  # deterministic input values (before --check)
    # what out.reshape(-1)[start:start + length] must equal after one call: asked for slice by slice, so
    # checking a 1 GiB buffer never holds a second 1 GiB copy (the bench's memory goal is <= 2x the buffer)
    expected: Callable[[int, int], Any]


def _pattern(torch, rank: int, dtype, device):
    vals = [float((3 * rank + j) % PERIOD + 1) for j in range(PERIOD)]
    return torch.tensor(vals, dtype=torch.float64).to(device=device, dtype=dtype)


def _sum_pattern(torch, n: int, dtype, device):
    # computed in int64 then cast: exact, and int8/uint8 wrap like nccl does
    vals = [sum((3 * r + j) % PERIOD + 1 for r in range(n)) for j in range(PERIOD)]
    return torch.tensor(vals, dtype=torch.int64).to(device=device).to(dtype)


def periodic(torch, pattern, start: int, length: int):
    """pattern repeated so that element i is pattern[(start + i) % P]."""
    p = pattern.roll(-(start % PERIOD))
    reps = -(-length // PERIOD)
    return p.repeat(reps)[:length]


# elements per slice when filling or checking: 16 MiB of float32, small beside any size worth a memory goal
SLICE = 1 << 22


def fill_periodic(torch, dst, pattern, start: int = 0) -> None:
    """dst[i] = pattern[(start + i) % P], written slice by slice (no temporary as large as dst)."""
    flat = dst.reshape(-1)
    for i in range(0, flat.numel(), SLICE):
        n = min(SLICE, flat.numel() - i)
        flat[i:i + n].copy_(periodic(torch, pattern, start + i, n))


def blocks(torch, parts: list, c: int, start: int, length: int):
    """Elements [start, start + length) of the concatenation of blocks of c elements, block r being
    periodic(parts[r][0], parts[r][1], c), without building the whole concatenation."""
    out = []
    i, end = start, start + length
    while i < end:
        r, off = divmod(i, c)
        n = min(c - off, end - i)
        pat, base = parts[r]
        out.append(periodic(torch, pat, base + off, n))
        i += n
    return out[0] if len(out) == 1 else torch.cat(out)


@dataclasses.dataclass(frozen=True)
class Collective:
    name: str
    redop: str                                   # 'sum' or 'none' (nccl-tests' redop column)
    root: int                                    # -1, or the root rank (broadcast)
    layout: Callable[[int, int, int], Layout]
    factor: Callable[[int], float]               # busbw = algbw * factor(nranks)
    variants: tuple[bool, ...]                   # in_place values torch can express
    make: Callable[..., Buffers]
    min_ranks: int = 1

    def busbw_factor(self, n: int) -> float:
        return self.factor(n)

    def bandwidth(self, nbytes: int, seconds: float, n: int) -> tuple[float, float]:
        """(algbw, busbw) in GB/s (1e9 B/s), nccl-tests' getBw."""
        if seconds <= 0:
            return 0.0, 0.0
        alg = nbytes / 1e9 / seconds
        return alg, alg * self.factor(n)


# ---- per-collective buffer builders -------------------------------------------------------------

def _make_all_reduce(torch, dist, lay: Layout, rank: int, n: int, dtype, device, in_place: bool, group=None) -> Buffers:
    buf = torch.empty(lay.count, dtype=dtype, device=device)
    p = _pattern(torch, rank, dtype, device)
    s = _sum_pattern(torch, n, dtype, device)
    return Buffers(
        inp=buf, out=buf,
        call=lambda: dist.all_reduce(buf, group=group),
        fill=lambda: fill_periodic(torch, buf, p),
        expected=lambda i, k: periodic(torch, s, i, k),
    )


def _fn(dist, *names):
    for nm in names:
        f = getattr(dist, nm, None)
        if f is not None:
            return f
    raise RuntimeError(f"torch.distributed has none of {names}")


def _make_all_gather(torch, dist, lay: Layout, rank: int, n: int, dtype, device, in_place: bool, group=None) -> Buffers:
    ag = _fn(dist, "all_gather_single", "all_gather_into_tensor")
    out = torch.empty(lay.recv, dtype=dtype, device=device)
    inp = out[rank * lay.count:(rank + 1) * lay.count] if in_place else torch.empty(lay.send, dtype=dtype, device=device)
    pats = [_pattern(torch, r, dtype, device) for r in range(n)]
    return Buffers(
        inp=inp, out=out,
        call=lambda: ag(out, inp, group=group),
        fill=lambda: fill_periodic(torch, inp, pats[rank]),
        expected=lambda i, k: blocks(torch, [(pats[r], 0) for r in range(n)], lay.count, i, k),
    )


def _make_reduce_scatter(torch, dist, lay: Layout, rank: int, n: int, dtype, device, in_place: bool, group=None) -> Buffers:
    rs = _fn(dist, "reduce_scatter_single", "reduce_scatter_tensor")
    inp = torch.empty(lay.send, dtype=dtype, device=device)
    out = inp[rank * lay.count:(rank + 1) * lay.count] if in_place else torch.empty(lay.recv, dtype=dtype, device=device)
    p = _pattern(torch, rank, dtype, device)
    s = _sum_pattern(torch, n, dtype, device)
    return Buffers(
        inp=inp, out=out,
        call=lambda: rs(out, inp, group=group),
        fill=lambda: fill_periodic(torch, inp, p),
        expected=lambda i, k: periodic(torch, s, rank * lay.count + i, k),
    )


def _make_alltoall(torch, dist, lay: Layout, rank: int, n: int, dtype, device, in_place: bool, group=None) -> Buffers:
    inp = torch.empty(lay.send, dtype=dtype, device=device)
    out = torch.empty(lay.recv, dtype=dtype, device=device)
    pats = [_pattern(torch, r, dtype, device) for r in range(n)]
    c = lay.count
    return Buffers(
        inp=inp, out=out,
        call=lambda: dist.all_to_all_single(out, inp, group=group),
        fill=lambda: fill_periodic(torch, inp, pats[rank]),
        # block r of rank q's output is block q of rank r's input
        expected=lambda i, k: blocks(torch, [(pats[r], rank * c) for r in range(n)], c, i, k),
    )


def _make_broadcast(torch, dist, lay: Layout, rank: int, n: int, dtype, device, in_place: bool, group=None, root: int = 0) -> Buffers:
    buf = torch.empty(lay.count, dtype=dtype, device=device)
    p = _pattern(torch, rank, dtype, device)
    pr = _pattern(torch, root, dtype, device)
    return Buffers(
        inp=buf, out=buf,
        call=lambda: dist.broadcast(buf, src=root, group=group),
        fill=lambda: fill_periodic(torch, buf, p),
        expected=lambda i, k: periodic(torch, pr, i, k),
    )


def _make_sendrecv(torch, dist, lay: Layout, rank: int, n: int, dtype, device, in_place: bool, group=None) -> Buffers:
    """Ring point-to-point, as nccl-tests sendrecv: send to rank+1, receive from rank-1.

    With one rank per node this is exactly the traffic across the link.
    """
    inp = torch.empty(lay.send, dtype=dtype, device=device)
    out = torch.empty(lay.recv, dtype=dtype, device=device)
    nxt, prv = (rank + 1) % n, (rank - 1) % n
    p = _pattern(torch, rank, dtype, device)
    pp = _pattern(torch, prv, dtype, device)
    if device.type == "cuda":
        # NCCL needs send and receive in one group, or two ranks both sending
        # a large message block each other's stream forever.
        def call():
            ops = [dist.P2POp(dist.isend, inp, nxt, group=group), dist.P2POp(dist.irecv, out, prv, group=group)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
    else:
        def call():
            ws = [dist.isend(inp, nxt, group=group), dist.irecv(out, prv, group=group)]
            for w in ws:
                w.wait()
    return Buffers(
        inp=inp, out=out, call=call,
        fill=lambda: fill_periodic(torch, inp, p),
        expected=lambda i, k: periodic(torch, pp, i, k),
    )


COLLECTIVES: dict[str, Collective] = {
    c.name: c
    for c in (
        Collective("all_reduce", "sum", -1, _flat, FACTORS["all_reduce"], (True,), _make_all_reduce),
        Collective("all_gather", "none", -1, _gather_layout, FACTORS["all_gather"], (False, True), _make_all_gather),
        Collective("reduce_scatter", "sum", -1, _scatter_layout, FACTORS["reduce_scatter"], (False, True), _make_reduce_scatter),
        Collective("alltoall", "none", -1, _alltoall_layout, FACTORS["alltoall"], (False,), _make_alltoall),
        Collective("broadcast", "none", 0, _flat, FACTORS["broadcast"], (True,), _make_broadcast),
        Collective("sendrecv", "none", -1, _flat, FACTORS["sendrecv"], (False,), _make_sendrecv, min_ranks=2),
    )
}
OP_ALIASES = {"allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter",
              "all_to_all": "alltoall", "bcast": "broadcast", "send_recv": "sendrecv", "p2p": "sendrecv"}


def parse_ops(text: str) -> list[str]:
    """``all_reduce``, ``all_gather,sendrecv`` or ``all`` -> op names in display order."""
    out: list[str] = []
    for item in (text or "").split(","):
        t = item.strip().lower().replace("-", "_")
        if not t:
            continue
        if t == "all":
            return list(COLLECTIVES)
        t = OP_ALIASES.get(t, t)
        if t not in COLLECTIVES:
            raise UsageError(f"--op: {item.strip()!r} is not a collective; choose from {', '.join(COLLECTIVES)} or all")
        if t not in out:
            out.append(t)
    if not out:
        raise UsageError("--op: empty; write e.g. all_reduce or all")
    return out
