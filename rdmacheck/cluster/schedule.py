"""Pairwise rounds: every pair of nodes exactly once, each node in at most one pair per round.

The round-robin "circle method" (the schedule of a round-robin tournament):
fix the first node, rotate the others one place per round, pair position i
with position m-1-i.  With an odd count a "bye" joins, and whoever meets it
sits the round out.  n nodes take n-1 rounds when n is even, n when odd,
which is the least possible: a round holds at most floor(n/2) of the
n(n-1)/2 pairs.

Why rounds at all: a node in two transfers at once halves each of them, so a
healthy link would look like a bad one.  One pair per node per round keeps
every measured link alone on both of its ends.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def rounds(nodes: Sequence[T]) -> list[list[tuple[T, T]]]:
    """Rounds of disjoint pairs covering every unordered pair once.

    ``rounds(["a", "b", "c", "d"])`` -> 3 rounds of 2 pairs.  Fewer than
    two nodes -> no rounds.  Node order decides which pairs share a round,
    nothing else; pairs keep the order the nodes were given in.
    """
    items: list[T | None] = list(nodes)
    n = len(items)
    if n < 2:
        return []
    if len(set(items)) != n:
        raise ValueError("rounds(): nodes must be distinct")
    pos = {i: i for i in range(n)}  # index -> original order, to orient pairs
    idx: list[int | None] = list(range(n))
    if n % 2:
        idx.append(None)  # the bye
    m = len(idx)
    out: list[list[tuple[T, T]]] = []
    for _ in range(m - 1):
        rnd = []
        for i in range(m // 2):
            a, b = idx[i], idx[m - 1 - i]
            if a is None or b is None:
                continue
            if pos[a] > pos[b]:
                a, b = b, a
            rnd.append((items[a], items[b]))
        out.append(rnd)
        # keep idx[0] fixed, rotate the rest one step clockwise
        idx = [idx[0], idx[-1]] + idx[1:-1]
    return out
