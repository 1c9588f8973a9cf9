"""An inverted-file (IVF) index over item factors: approximate top-k by inner product.

Exact scoring multiplies each query with every item's factors; from some tens of thousands of
items that pass is most of what a Recommend costs. The index groups the items by k-means on
their factors and stores each group in blocks of `BLOCK` items, largest norm first (the last
block padded with rows scored -inf). A query is scored against the blocks' mean vectors
first, then only against the items of the best-scoring blocks, a few percent of the
catalogue; an item in a block it did not probe is missed, which is the approximation. Every
query of a batch gathers the same number of blocks: one batched product and one top-k serve
a batch, as in exact scoring.

How many blocks to probe is calibrated when the index is built: the fewest that find at least
`target_recall` of the exact top-k for sample queries (the model's own users, with the items
they would have excluded). When that takes more than `MAX_SCANNED` of the catalogue, the
factors have no structure an index can use (random vectors, for one) and `build` returns None:
exact scoring is then both exact and cheaper.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

BLOCK = 64
# Beyond this share of the catalogue, gathering the probed rows costs more than exact scoring.
MAX_SCANNED = 0.1
KMEANS_ITERATIONS = 10
# Factors one search gathers at most (64 MiB of float32), whatever the batch and probes.
_GATHER_FLOATS = 1 << 24
# Rows of the (items x centroids) distance matrix computed at once while clustering.
_KMEANS_CHUNK = 16_384


@dataclass(frozen=True)
class ItemIndex:
    """Never modified once built (`replace` makes a copy), so threads share it freely.

    The arrays are numpy: a search is a dozen operations on a few kilobytes each, where
    numpy's per-call cost (about a microsecond) is a fraction of torch's (measured: 27 us a
    query against 77 us with the same operations in torch); torch.topk, faster than numpy's
    partition, picks the probed blocks and the top k.
    """

    blocks: np.ndarray  # (n_blocks, BLOCK, factors): item factors, group by group
    block_items: np.ndarray  # (n_blocks, BLOCK): catalogue row of each slot (0 if padding)
    block_bias: np.ndarray  # (n_blocks, BLOCK): 0, or -inf for a padding slot
    centroids_t: np.ndarray  # (factors, n_blocks): the mean of each block's items
    n_items: int
    probes: int  # blocks scanned per query
    recall: float  # measured at calibration (see `build`)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def scanned(self) -> float:
        """The share of the catalogue a query scores."""
        return min(1.0, self.probes * BLOCK / self.n_items)

    @classmethod
    def build(cls, items: torch.Tensor, queries: torch.Tensor, exact: np.ndarray, *,
              target_recall: float, banned: torch.Tensor | None = None,
              seed: int = 0) -> ItemIndex | None:
        """Cluster `items` and calibrate the probes on `queries` (vectors, one per row) so
        that their top-k finds `target_recall` of `exact`, their exact top-k rows; `banned`
        are flat positions (query row * n_items + item row) they leave out. None when no
        probe count under `MAX_SCANNED` of the catalogue reaches the target."""
        n_items = len(items)
        k = exact.shape[1]
        centroids, groups = _kmeans(items, max(1, round(math.sqrt(n_items))), seed=seed)
        index = _layout(items, centroids, groups)

        @functools.cache
        def recall(probes: int) -> float:
            _, found = replace(index, probes=probes).search(queries, k, banned=banned)
            hits = (found[:, :, np.newaxis] == exact[:, np.newaxis, :]).any(axis=2).sum()
            return int(hits) / exact.size

        # Candidate sets grow with the probes (blocks are taken best centroid first), so
        # recall never falls as probes rise: double until the target is reached, then bisect
        # for the fewest probes that reach it (each try costs in proportion to its probes).
        most = min(index.n_blocks, int(MAX_SCANNED * n_items / BLOCK))
        low = high = -(-k // BLOCK)
        if high > most:
            return None
        while recall(high) < target_recall:
            if high >= most:
                return None
            low, high = high + 1, min(2 * high, most)
        while low < high:
            middle = (low + high) // 2
            if recall(middle) >= target_recall:
                high = middle
            else:
                low = middle + 1
        return replace(index, probes=high, recall=recall(high))

    def search(self, vectors: torch.Tensor, k: int, *,
               banned: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, catalogue rows) of each query's best k among the probed blocks, best
        first; -inf where fewer than k items were found (padding or `banned`, flat positions
        as in `build`). Queries are taken in groups that gather at most `_GATHER_FLOATS`."""
        queries = vectors.numpy()
        probes = min(max(self.probes, -(-k // BLOCK)), self.n_blocks)
        sorted_banned = np.sort(banned.numpy()) if banned is not None and len(banned) else None
        step = max(1, _GATHER_FLOATS // (probes * BLOCK * queries.shape[1]))
        if step >= len(queries):
            return self._search(queries, 0, k, probes, sorted_banned)
        found = [self._search(queries[first : first + step], first, k, probes, sorted_banned)
                 for first in range(0, len(queries), step)]
        return np.concatenate([values for values, _ in found]), np.concatenate(
            [rows for _, rows in found])

    def _search(self, queries: np.ndarray, first: int, k: int, probes: int,
                banned: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """`search` for the queries from row `first` on."""
        n = len(queries)
        block_scores = queries @ self.centroids_t
        probed = torch.topk(torch.from_numpy(block_scores), probes, sorted=False).indices.numpy()
        rows = self.block_items[probed].reshape(n, -1)  # (queries, probes * BLOCK)
        scores = np.matmul(self.blocks[probed].reshape(n, rows.shape[1], -1),
                           queries[:, :, np.newaxis])[:, :, 0]
        scores += self.block_bias[probed].reshape(n, -1)
        if banned is not None:
            # Binary search in the sorted `banned`: a fraction of np.isin's cost.
            flat = rows + np.arange(first, first + n)[:, np.newaxis] * self.n_items
            nearest = np.minimum(np.searchsorted(banned, flat), len(banned) - 1)
            scores[banned[nearest] == flat] = -np.inf
        values, top = torch.topk(torch.from_numpy(scores), min(k, scores.shape[1]))
        return values.numpy(), np.take_along_axis(rows, top.numpy(), axis=1)


def _kmeans(points: torch.Tensor, groups: int, *,
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from `groups` distinct random points: (centroids, group of each
    point). A group left empty keeps its previous centroid."""
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(len(points), generator=generator)[:groups]].clone()
    for _ in range(KMEANS_ITERATIONS):
        nearest = _nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
        counts = torch.bincount(nearest, minlength=len(centroids))
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centroids, _nearest(points, centroids)


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The nearest centroid (L2) of each point: argmax of p.c - |c|^2 / 2."""
    half_norms = (centroids * centroids).sum(dim=1) / 2
    return torch.cat([torch.argmax(chunk @ centroids.T - half_norms, dim=1)
                      for chunk in points.split(_KMEANS_CHUNK)])


def _layout(items: torch.Tensor, centroids: torch.Tensor, groups: torch.Tensor) -> ItemIndex:
    """Items stored group by group, largest norm first, in blocks of BLOCK rows, each block
    probed by the mean of its items (so a group's block of large-norm items, the likeliest
    top-k of an inner product, is probed before the group's others); probes: every block."""
    norms = items.norm(dim=1)
    order = torch.from_numpy(np.lexsort((-norms.numpy(), groups.numpy())))
    sizes = torch.bincount(groups, minlength=len(centroids))
    blocks_per_group = -(-sizes // BLOCK)
    sorted_groups = groups[order]
    rank = torch.arange(len(items)) - (torch.cumsum(sizes, 0) - sizes)[sorted_groups]
    block = (torch.cumsum(blocks_per_group, 0) - blocks_per_group)[sorted_groups] + rank // BLOCK
    lane = rank % BLOCK
    n_blocks = int(blocks_per_group.sum())
    block_items = torch.zeros(n_blocks, BLOCK, dtype=torch.long)
    block_items[block, lane] = order
    block_bias = torch.full((n_blocks, BLOCK), float("-inf"))
    block_bias[block, lane] = 0.0
    block_means = (torch.zeros(n_blocks, items.shape[1]).index_add_(0, block, items[order])
                   / torch.bincount(block, minlength=n_blocks).unsqueeze(1))
    return ItemIndex(
        blocks=items[block_items].numpy(), block_items=block_items.numpy(),
        block_bias=block_bias.numpy(), centroids_t=block_means.T.contiguous().numpy(),
        n_items=len(items), probes=n_blocks, recall=1.0)
