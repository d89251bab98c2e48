"""Arrays in files without pickle, read back mapped, not read: a sparse matrix is a folder of its
parts' npy files. The prepared store's per-listing arrays (`features.Listings`) and the words that
prepare's worker hands over (`words.Words`) are kept this way. And `ranks`, which the ragged
arrays beside them (each listing's pictures, words, products) are indexed with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

_CSR_PARTS = ("data", "indices", "indptr")


def save_csr(folder: Path, matrix: sp.csr_matrix) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for part in _CSR_PARTS:
        np.save(folder / f"{part}.npy", getattr(matrix, part), allow_pickle=False)
    np.save(folder / "shape.npy", np.array(matrix.shape, np.int64), allow_pickle=False)


def load_csr(folder: Path) -> sp.csr_matrix:
    data, indices, indptr = (mapped(folder / f"{part}.npy") for part in _CSR_PARTS)
    rows, columns = (int(n) for n in np.load(folder / "shape.npy", allow_pickle=False))
    return sp.csr_matrix((data, indices, indptr), shape=(rows, columns), copy=False)


def mapped(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def ranks(counts: np.ndarray) -> np.ndarray:
    """Position of each member within its group, for groups of `counts` consecutive members."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
