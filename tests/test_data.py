"""The data layer's id helpers against numpy's plain versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matching_cli.data.tables import lookup, shared_rows, unique_sorted


def test_lookup_finds_each_key_and_marks_absent_ones():
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(10_000, 500, replace=False)).astype(np.int64)
    keys = np.concatenate([rng.choice(ids, 1000), [-5, 10_001, ids[0] + 0, 123_456]])
    keys = rng.permutation(keys)
    rows = lookup(ids, keys)
    found = rows >= 0
    assert (ids[rows[found]] == keys[found]).all()
    assert not np.isin(keys[~found], ids).any()
    assert found.sum() == np.isin(keys, ids).sum()


def test_lookup_in_an_empty_table():
    assert lookup(np.zeros(0, np.int64), np.array([1, 2])).tolist() == [-1, -1]


def test_unique_sorted_is_numpys_unique():
    values = np.random.default_rng(1).integers(0, 50, 300)
    assert unique_sorted(values).tolist() == np.unique(values).tolist()
    assert unique_sorted(np.zeros(0, np.int64)).tolist() == []


def test_shared_rows_maps_a_stored_matrix_without_reading_or_writing_it(tmp_path):
    """predict's scoring processes share the store's item matrix where it is mapped: writable for
    torch, but copy-on-write, so the store's file never changes."""
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "items.npy", matrix)
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    rows = shared_rows(mapped)
    assert isinstance(rows, np.memmap) and rows.flags.writeable
    np.testing.assert_array_equal(rows, matrix)
    rows[0] = -1.0
    np.testing.assert_array_equal(np.load(tmp_path / "items.npy"), matrix)
    part = shared_rows(mapped[1:])  # not a whole file: read as it is
    assert not isinstance(part, np.memmap)
    np.testing.assert_array_equal(part, matrix[1:])


def _mapped_from(path: Path, address: int) -> bool:
    """Whether `address` of this process lies in a mapping of the file `path` (Linux)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *_, name = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in span.split("-"))
        if name == str(path) and start <= address < end:
            return True
    return False


def test_train_and_evaluate_use_the_stored_item_matrix_as_mapped_on_a_cpu(tmp_path):
    # They read the real size's 1.8 GB into fresh memory first: 5 s of each command.
    import torch

    from matching_cli.model.train import items_to_device

    np.save(tmp_path / "items.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    items = items_to_device(mapped, torch.device("cpu"))
    assert _mapped_from((tmp_path / "items.npy").resolve(), items.data_ptr())
    np.testing.assert_array_equal(items.numpy(), mapped)
