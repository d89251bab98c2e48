"""One prepared store per fingerprint: models trained under other split settings each keep theirs,
a model scores from its own store when the raw files are gone, and old stores are pruned."""

from __future__ import annotations

import json
import shutil

import numpy as np

from matching_cli.data.prepare import KEEP_STORES, ensure_prepared, prepare, stores
from matching_cli.settings import DataSettings
from tests.conftest import FAST, invoke, store


def test_models_of_two_split_seeds_score_without_rebuilding_or_raw_files(project, monkeypatch):
    first = invoke("train", *FAST, "--json")
    assert first.exit_code == 0, first.stderr
    monkeypatch.setenv("MATCHING_DATA__SPLIT_SEED", "7")
    second = invoke("train", *FAST, "--json")
    assert second.exit_code == 0, second.stderr
    monkeypatch.delenv("MATCHING_DATA__SPLIT_SEED")
    both = stores(project / "prepared")
    assert len(both) == 2
    written = {p: (p / "items.npy").stat().st_mtime_ns for p in both}

    shutil.copy(project / "data/test.parquet", project / "pairs.parquet")
    shutil.rmtree(project / "data")  # only the prepared stores are left
    for result in (first, second):
        run_id = json.loads(result.stdout)["run_id"]
        scored = invoke("predict", "pairs.parquet", "-o", f"{run_id}.csv", "--run-id", run_id)
        assert scored.exit_code == 0, scored.stderr
        evaluated = invoke("evaluate", "--run-id", run_id, "--json")
        assert evaluated.exit_code == 0, evaluated.stderr
    assert {p: (p / "items.npy").stat().st_mtime_ns for p in both} == written


def test_only_the_most_recently_used_stores_are_kept(project):
    data = DataSettings()
    first = ensure_prepared(data).fingerprint
    made = [first]
    for seed in range(1, KEEP_STORES + 1):
        made.append(prepare(data.model_copy(update={"split_seed": seed}))[0].fingerprint)
        if seed == 1:
            ensure_prepared(data)  # using the first store again keeps it among the recent
    kept = [p.name for p in stores(project / "prepared")]
    assert len(kept) == KEEP_STORES
    assert first in kept and made[1] not in kept


def test_labelled_pairs_features_computed_in_workers_equal_computing_here(project, monkeypatch):
    """prepare computes the labelled pairs' features in chunks spread over forked processes:
    every row must be its own pair's, in order."""
    from matching_cli.data import feature_store
    from matching_cli.data.pairs import pair_features

    monkeypatch.setattr(feature_store, "PAIR_CHUNK", 97)  # 1,200 pairs: 13 chunks
    assert invoke("prepare").exit_code == 0
    with np.load(store() / "pairs.npz") as z:
        left, right = z["left"], z["right"]
    listings = feature_store.load_listings(store())
    stored = np.load(store() / "pair_features.npy")
    np.testing.assert_array_equal(stored, pair_features(listings, left, right))
