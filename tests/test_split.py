import numpy as np
import pytest

from matching_cli.data.prepare import split_pairs
from matching_cli.settings import DataSettings


def _listings(split, left, right, code):
    return set(left[split == code]) | set(right[split == code])


def test_disjoint_split_keeps_each_listing_in_one_split():
    rng = np.random.default_rng(0)
    # 2,000 small products of 2-4 listings, each pair inside one product.
    left, right = [], []
    for product in range(2000):
        base = product * 4
        size = rng.integers(2, 5)
        for a in range(size - 1):
            left.append(base + a)
            right.append(base + a + 1)
    left, right = np.array(left), np.array(right)
    target = rng.integers(0, 2, len(left)).astype(np.float32)
    split, report = split_pairs(left, right, target, DataSettings())
    assert report.method == "disjoint"
    sets = [_listings(split, left, right, c) for c in range(3)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    n = len(left)
    assert report.sizes["test"] == pytest.approx(0.2 * n, rel=0.05)
    assert report.sizes["val"] == pytest.approx(0.1 * n, rel=0.1)


def test_dense_graph_falls_back_to_first_listing_groups():
    rng = np.random.default_rng(1)
    # Every listing paired with random others: one giant component.
    left = rng.integers(0, 3000, 12000)
    right = rng.integers(0, 3000, 12000)
    target = rng.integers(0, 2, len(left)).astype(np.float32)
    split, report = split_pairs(left, right, target, DataSettings())
    assert report.method == "disjoint-first-listing"
    assert report.largest_component_share > 0.9
    firsts = [set(left[split == c]) for c in range(3)]
    assert not (firsts[0] & firsts[1] or firsts[0] & firsts[2] or firsts[1] & firsts[2])
    assert min(report.sizes.values()) > 0.05 * len(left)  # never empty or lopsided


def test_random_split_has_the_configured_sizes_and_is_seeded():
    left, right = np.arange(1000), np.arange(1000, 2000)
    target = (np.arange(1000) % 2).astype(np.float32)
    settings = DataSettings(split="random", test_size=0.2, val_size=0.1)
    split, report = split_pairs(left, right, target, settings)
    assert report.sizes == {"train": 700, "val": 100, "test": 200}
    again, _ = split_pairs(left, right, target, settings)
    assert (split == again).all()
