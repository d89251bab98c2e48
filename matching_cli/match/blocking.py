"""Blocking: each listing's K most similar listings, the candidates that the pair model then scores.

The similarity is the cosine of the concatenated embedding blocks. Each row of the item matrix holds
L2-normalised blocks (zero where missing); re-normalised to unit length, the dot product of two rows
is that cosine, so any inner-product index serves. With both blocks present it is the mean of the
block cosines; a listing missing one block is compared on the block it has, scaled by 1/sqrt(2), so
it ranks a little lower and the model decides. A listing with no embedding at all has no neighbours.

Three searches: exact (a matrix product per chunk of queries and `torch.topk`, the fastest exact
method on a GPU, and on a CPU while the catalogue is small), and two faiss indexes for large
catalogues on a CPU, where exact search grows with the square of the catalogue: inverted lists
(IVF, the default there: k-means cuts the catalogue into clusters and each listing is compared with
the listings of the clusters nearest to it) and an HNSW graph. On demo catalogues of 96k to 1M
listings IVF was 1.6-2.2x faster than HNSW and found more of the exact neighbours (README, "Why
faiss IVF").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from matching_cli.choices import BlockingMethod
from matching_cli.data.tables import normalise, read_rows
from matching_cli.errors import MatchingError
from matching_cli.progress import NullReporter, Reporter, closing
from matching_cli.settings import MatchSettings

log = logging.getLogger(__name__)
_DEFAULTS = MatchSettings()  # the [match] settings own the defaults
_CPU_CHUNK_ELEMENTS = 1 << 25  # similarities held at once: 128 MiB of float32
_GPU_CHUNK_ELEMENTS = 1 << 30
_INDEX_CHUNK = 50_000
# Rows spread over more than this many times their number are picked through the memory map, not
# read as a stretch of the file and chosen from.
_SCATTERED = 8
# IVF: listings a list gets in k-means' training sample (faiss asks for at least 39), and so the
# most lists a catalogue is cut into is its size over this.
IVF_TRAIN_PER_LIST = 64


@dataclass(frozen=True)
class HnswParams:
    m: int = _DEFAULTS.hnsw_m
    ef_construction: int = _DEFAULTS.hnsw_ef_construction
    ef_search: int = _DEFAULTS.hnsw_ef_search

    @classmethod
    def of(cls, settings: MatchSettings) -> HnswParams:
        return cls(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)


@dataclass(frozen=True)
class IvfParams:
    lists: int = _DEFAULTS.ivf_lists  # 0: 4 x sqrt(listings)
    probes: int = _DEFAULTS.ivf_probes

    @classmethod
    def of(cls, settings: MatchSettings) -> IvfParams:
        return cls(settings.ivf_lists, settings.ivf_probes)

    def lists_for(self, n: int) -> int:
        """The lists of a catalogue of n listings: as set (0: 4 x sqrt(n)), at most n over
        IVF_TRAIN_PER_LIST."""
        wanted = self.lists or round(4 * math.sqrt(n))
        return max(1, min(wanted, n // IVF_TRAIN_PER_LIST))


@dataclass
class Candidates:
    """Unordered pairs of item-matrix rows (left < right), each once, sorted by (left, right)."""

    left: np.ndarray
    right: np.ndarray
    similarity: np.ndarray  # float32 cosine
    methods: dict[str, int]  # method -> query listings searched with it

    def __len__(self) -> int:
        return len(self.left)

    def keys(self, n_items: int) -> np.ndarray:
        return pair_keys(self.left, self.right, n_items)


def pair_keys(a: np.ndarray, b: np.ndarray, n_items: int) -> np.ndarray:
    """One sortable int64 per unordered pair of rows."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    return np.minimum(a, b) * n_items + np.maximum(a, b)


def unit_rows(matrix: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """A float32 copy of the item matrix (or of its sorted `rows`) with every non-zero row scaled to
    unit length."""
    if rows is None:
        out = read_rows(matrix)
        normalise(out)
        return out
    chunks = list(unit_chunks(matrix, rows))
    return np.concatenate(chunks) if chunks else np.zeros((0, matrix.shape[1]), np.float32)


def unit_chunks(matrix: np.ndarray, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """`unit_rows` a chunk at a time. The stretch of the file that the rows span is read a part at
    a time, so neither the whole matrix nor its memory map's pages stay in memory; rows scattered
    thinly over a long stretch (one category of a large catalogue) are picked out directly."""
    if rows is not None and not len(rows):
        return
    if rows is not None and rows[-1] - rows[0] + 1 > _SCATTERED * len(rows):
        for start in range(0, len(rows), _INDEX_CHUNK):
            chunk = np.array(matrix[rows[start : start + _INDEX_CHUNK]], np.float32)
            normalise(chunk)
            yield chunk
        return
    low, high = (0, len(matrix)) if rows is None else (int(rows[0]), int(rows[-1]) + 1)
    for start in range(low, high, _INDEX_CHUNK):
        chunk = read_rows(matrix, start, min(start + _INDEX_CHUNK, high))
        if rows is not None:
            first, last = np.searchsorted(rows, [start, start + _INDEX_CHUNK])
            chunk = chunk[rows[first:last] - start]
        normalise(chunk)
        yield chunk


def _present(matrix: np.ndarray) -> np.ndarray:
    """Rows with any embedding, read a chunk at a time."""
    found = []
    for start in range(0, len(matrix), _INDEX_CHUNK):
        chunk = read_rows(matrix, start, start + _INDEX_CHUNK)
        found.append(np.einsum("ij,ij->i", chunk, chunk) > 0)
    return np.flatnonzero(np.concatenate(found)) if found else np.zeros(0, np.int64)


def find_candidates(
    matrix: np.ndarray,
    query_rows: np.ndarray,
    k: int,
    *,
    method: BlockingMethod = BlockingMethod.auto,
    device: torch.device | None = None,
    groups: np.ndarray | None = None,
    exact_max: int = _DEFAULTS.exact_max,
    hnsw: HnswParams = HnswParams(),
    reporter: Reporter | None = None,
    ivf: IvfParams = IvfParams(),
) -> Candidates:
    """The K nearest neighbours of each query row among all rows (of its group, when `groups` is
    given: only listings with the same group code are paired), as unique unordered pairs.

    `matrix` is the item matrix (a memory map is fine): the searches normalise its rows themselves,
    and an index holds the only full copy of them."""
    method = BlockingMethod(method)
    if k < 1:
        raise MatchingError(f"-k {k}: needs at least one neighbour")
    reporter = reporter or NullReporter()
    device = device or torch.device("cpu")
    present = _present(matrix)
    if len(present) < len(matrix):
        log.info(
            "Listings with no embedding at all get no neighbours by embedding (text blocking may "
            "still pair them): %s",
            len(matrix) - len(present),
        )
    codes = np.zeros(len(matrix), np.int64) if groups is None else groups.astype(np.int64)
    is_query = np.zeros(len(matrix), bool)
    is_query[query_rows] = True
    firsts, seconds, sims, methods = [], [], [], {}
    for code in np.unique(codes[present]):
        base = present[codes[present] == code]
        query_pos = np.flatnonzero(is_query[base])
        if len(base) < 2 or len(query_pos) == 0:
            continue
        chosen = _choose(method, device, len(query_pos), len(base), exact_max)
        methods[chosen] = methods.get(chosen, 0) + len(query_pos)
        k_here = min(k, len(base) - 1)
        rows = None if len(base) == len(matrix) else base
        neighbours, similarity = search(
            matrix,
            query_pos,
            k_here,
            chosen,
            device,
            hnsw=hnsw,
            ivf=ivf,
            reporter=reporter,
            rows=rows,
        )
        firsts.append(np.repeat(base[query_pos], k_here))
        seconds.append(np.where(neighbours.ravel() >= 0, base[neighbours.ravel()], -1))
        sims.append(similarity.ravel())
    if not firsts:
        return Candidates(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), methods
        )
    return _unique_pairs(
        np.concatenate(firsts), np.concatenate(seconds), np.concatenate(sims), len(matrix), methods
    )


def search(
    matrix: np.ndarray,
    query_pos: np.ndarray,
    k: int,
    method: BlockingMethod = BlockingMethod.exact,
    device: torch.device | None = None,
    hnsw: HnswParams = HnswParams(),
    reporter: Reporter | None = None,
    rows: np.ndarray | None = None,
    ivf: IvfParams = IvfParams(),
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other rows of the base (`matrix`, or its sorted `rows`) for the sorted base
    positions `query_pos`, most similar first: (positions in the base, similarities), each of
    shape (queries, k); position -1 where none."""
    reporter = reporter or NullReporter()
    if method == BlockingMethod.exact:
        return _exact_search(matrix, rows, query_pos, k, device or torch.device("cpu"), reporter)
    if method == BlockingMethod.ivf:
        index = build_ivf(matrix, ivf, reporter, rows)

        def queries(chunk: np.ndarray) -> np.ndarray:  # the index keeps no vectors in row order
            return unit_rows(matrix, chunk if rows is None else rows[chunk])

        return _index_search(index, "IVF search", queries, query_pos, k, reporter)
    index = build_hnsw(matrix, hnsw, reporter, rows)
    unit = stored_vectors(index)  # the queries come from the index's own copy of the rows
    return _index_search(index, "HNSW search", unit.__getitem__, query_pos, k, reporter)


def _choose(
    method: BlockingMethod, device: torch.device, n_queries: int, n_base: int, exact_max: int
) -> BlockingMethod:
    if method != BlockingMethod.auto:
        return method
    if device.type != "cpu":
        return BlockingMethod.exact
    # The cost of exact search is queries x catalogue: compare it with a whole catalogue of exact_max.
    exact = n_queries * n_base <= exact_max**2
    return BlockingMethod.exact if exact else BlockingMethod.ivf


def _drop_self(neighbours: np.ndarray, similarity: np.ndarray, query_pos: np.ndarray, k: int):
    """Searches return k + 1 neighbours; keep the k that are not the query itself, in order."""
    is_self = neighbours == query_pos[:, None]
    order = np.argsort(is_self | (neighbours < 0), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(neighbours, order, 1), np.take_along_axis(similarity, order, 1)


def _exact_search(
    matrix: np.ndarray,
    rows: np.ndarray | None,
    query_pos: np.ndarray,
    k: int,
    device: torch.device,
    reporter: Reporter,
) -> tuple[np.ndarray, np.ndarray]:
    base = torch.from_numpy(unit_rows(matrix, rows)).to(device)
    # On an accelerator, half precision (tensor cores) chooses the neighbours and float32 gives
    # their similarity; on a CPU, float32 does both.
    search = base if device.type == "cpu" else base.half()
    budget = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    queries = torch.from_numpy(query_pos).to(device)
    chunk = max(1, min(len(query_pos), budget // len(base)))
    kept_idx, kept_sim = [], []
    task = reporter.task("exact search", total=len(query_pos), unit="listings")
    with closing(task), torch.inference_mode():
        for start in range(0, len(query_pos), chunk):
            rows = queries[start : start + chunk]
            sim, idx = torch.topk(search[rows] @ search.T, k + 1, dim=1)
            if search is not base:
                sim = torch.einsum("qd,qkd->qk", base[rows], base[idx])
            kept_idx.append(idx.cpu().numpy())
            kept_sim.append(sim.cpu().numpy())
            task.advance(len(rows))
    return _drop_self(np.concatenate(kept_idx), np.concatenate(kept_sim), query_pos, k)


def _index_search(  # type: ignore[no-untyped-def]
    index,
    label: str,
    queries: Callable[[np.ndarray], np.ndarray],
    query_pos: np.ndarray,
    k: int,
    reporter: Reporter,
) -> tuple[np.ndarray, np.ndarray]:
    """A faiss index searched for the base positions `query_pos`, a chunk at a time
    (`queries(positions)`: their unit-length vectors)."""
    with closing(reporter.task(label, total=len(query_pos), unit="listings")) as task:
        found_idx, found_sim = [], []
        for start in range(0, len(query_pos), _INDEX_CHUNK):
            chunk = query_pos[start : start + _INDEX_CHUNK]
            sim, idx = index.search(queries(chunk), k + 1)
            found_idx.append(idx)
            found_sim.append(sim)
            task.advance(len(chunk))
    return _drop_self(np.concatenate(found_idx), np.concatenate(found_sim), query_pos, k)


def build_hnsw(  # type: ignore[no-untyped-def]
    matrix: np.ndarray,
    params: HnswParams,
    reporter: Reporter | None = None,
    rows: np.ndarray | None = None,
):
    """A faiss HNSW index over the unit-length rows (all, or the sorted `rows`), by inner product
    (= cosine).

    The rows are read and normalised a chunk at a time, so the index holds the only full copy."""
    faiss = _faiss()
    n = len(matrix) if rows is None else len(rows)
    index = faiss.IndexHNSWFlat(matrix.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.hnsw.efSearch = params.ef_search
    with closing(
        (reporter or NullReporter()).task("building the HNSW index", total=n, unit="listings")
    ) as task:
        for chunk in unit_chunks(matrix, rows):
            index.add(chunk)
            task.advance(len(chunk))
    return index


def build_ivf(  # type: ignore[no-untyped-def]
    matrix: np.ndarray,
    params: IvfParams,
    reporter: Reporter | None = None,
    rows: np.ndarray | None = None,
):
    """A faiss IVF index over the unit-length rows (all, or the sorted `rows`), by inner product
    (= cosine): its lists' centres found by k-means on a fixed random sample of the rows, then
    every row added to the list of its nearest centre, read a chunk at a time."""
    faiss = _faiss()
    n = len(matrix) if rows is None else len(rows)
    lists = params.lists_for(n)
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatIP(matrix.shape[1]), matrix.shape[1], lists, faiss.METRIC_INNER_PRODUCT
    )
    index.nprobe = min(params.probes, lists)
    index.cp.min_points_per_centroid = 1  # the sample gives each list enough: no faiss warning
    log.info("IVF: %d lists, %d searched per listing", lists, index.nprobe)
    with closing(
        (reporter or NullReporter()).task("building the IVF index", total=n, unit="listings")
    ) as task:
        sample = np.random.default_rng(0).choice(
            n, min(n, lists * IVF_TRAIN_PER_LIST), replace=False
        )
        sample.sort()
        index.train(unit_rows(matrix, sample if rows is None else rows[sample]))
        for chunk in unit_chunks(matrix, rows):
            index.add(chunk)
            task.advance(len(chunk))
    return index


def stored_vectors(index) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The vectors an HNSW index holds, as a read-only view (no copy): valid while the index is."""
    faiss = _faiss()
    storage = faiss.downcast_index(index.storage)
    view = faiss.rev_swig_ptr(storage.get_xb(), index.ntotal * index.d)
    view = view.reshape(index.ntotal, index.d)
    view.flags.writeable = False
    return view


def _faiss():  # type: ignore[no-untyped-def]
    try:
        import faiss
    except ImportError:
        raise MatchingError(
            "--method ivf and hnsw need faiss: pip install faiss-cpu (or use --method exact)"
        ) from None
    return faiss


def _unique_pairs(
    first: np.ndarray, second: np.ndarray, sim: np.ndarray, n_items: int, methods: dict[str, int]
) -> Candidates:
    valid = second >= 0  # an HNSW search may find fewer than k
    keys, where = np.unique(pair_keys(first[valid], second[valid], n_items), return_index=True)
    return Candidates(
        keys // n_items, keys % n_items, sim[valid][where].astype(np.float32), methods
    )
