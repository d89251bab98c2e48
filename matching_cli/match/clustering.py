"""Accepted pairs -> product groups, with a guard against chaining.

Plain connected components let one wrong edge merge two products, and a few more chain whole
families together. The guard adds edges strongest first (Kruskal's order) and refuses an edge that
  - joins two groups that both already hold two or more listings, unless it scores at least
    `join_threshold` (a one-off wrong edge between two real groups is usually weaker than the edges
    inside them), or
  - would make a group larger than `max_size` (the weakest edges of a hub are the ones cut).
A single listing joins a group on any accepted edge.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from matching_cli.settings import MatchSettings


@dataclass(frozen=True)
class Guard:
    join_threshold: float | None = None  # None: any accepted edge joins two groups
    max_size: int | None = None  # None: no cap

    @classmethod
    def of(cls, settings: MatchSettings) -> Guard:
        """The guard the [match] settings ask for: 0 turns a limit off."""
        return cls(settings.join_threshold or None, settings.max_group or None)

    @property
    def active(self) -> bool:
        return self.join_threshold is not None or self.max_size is not None


def cluster(
    n_nodes: int, left: np.ndarray, right: np.ndarray, score: np.ndarray, guard: Guard = Guard()
) -> np.ndarray:
    """A group label (0..groups-1) for each of `n_nodes` nodes, given the accepted edges."""
    if not guard.active or len(left) == 0:
        graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n_nodes, n_nodes))
        return connected_components(graph, directed=False)[1].astype(np.int64)
    # Work on the nodes that have edges: the union-find lists stay as small as the graph.
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    roots = _guarded_union(len(nodes), inverse[: len(left)], inverse[len(left) :], score, guard)
    labels = np.arange(n_nodes, dtype=np.int64)
    labels[nodes] = nodes[roots]
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _guarded_union(
    n: int, left: np.ndarray, right: np.ndarray, score: np.ndarray, guard: Guard
) -> np.ndarray:
    parent, size = list(range(n)), [1] * n
    join = -np.inf if guard.join_threshold is None else guard.join_threshold
    cap = guard.max_size or n

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    order = np.argsort(-score, kind="stable")
    for a, b, s in zip(
        left[order].tolist(), right[order].tolist(), score[order].tolist(), strict=True
    ):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        joined = size[ra] + size[rb]
        if joined > cap or (size[ra] > 1 and size[rb] > 1 and s < join):
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb], size[ra] = ra, joined
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def group_sizes(labels: np.ndarray) -> np.ndarray:
    """The size of each node's group."""
    return np.bincount(labels)[labels]


def size_histogram(
    labels: np.ndarray, edges: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 11, 51)
) -> dict[str, int]:
    """Number of groups by size: '1', '2', ..., '6-10', '11-50', '51+'."""
    counts = np.bincount(np.bincount(labels))  # counts[s]: groups of size s
    bounds = [*edges, max(len(counts), edges[-1] + 1)]
    out = {}
    for lo, hi in itertools.pairwise(bounds):
        name = f"{lo}+" if lo == edges[-1] else str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"
        out[name] = int(counts[lo:hi].sum())
    return out
