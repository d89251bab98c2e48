"""One prepared store per fingerprint: models trained under other split settings each keep theirs,
a model scores from its own store when the raw files are gone, and old stores are pruned."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from matching_cli.data.pairs import pair_features
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


def _feature_files(store_path):
    """What a store holds beside its split, relative to it."""
    written = [*store_path.glob("*.npy"), *store_path.glob("features/**/*")]
    written += store_path.glob("text_model/*")
    return sorted(p.relative_to(store_path) for p in written if p.is_file())


def test_a_store_of_another_split_shares_all_but_the_split(project, caplog):
    data = DataSettings()
    first = prepare(data)[0]
    caplog.set_level("INFO")
    second = prepare(data.model_copy(update={"split_seed": 11}))[0]
    assert "Sharing the listings' arrays of" in caplog.text
    assert second.fingerprint != first.fingerprint
    assert not np.array_equal(first.splits["test"].left, second.splits["test"].left)
    files = _feature_files(first.store)
    assert files == _feature_files(second.store) and Path("items.npy") in files
    assert Path("pairs.npz") not in files and len(files) > 10
    for name in files:  # hard links: one file each, written once
        assert (first.store / name).stat().st_ino == (second.store / name).stat().st_ino

    computed = prepare(
        data.model_copy(update={"split_seed": 11, "prepared_dir": project / "alone"})
    )[0]
    shutil.rmtree(first.store)  # the second store stands alone
    again = ensure_prepared(data.model_copy(update={"split_seed": 11}))
    assert again.store == second.store
    for name in files:
        assert (second.store / name).read_bytes() == (computed.store / name).read_bytes(), name
    np.testing.assert_array_equal(again.splits["train"].features, pair_features_of(again, "train"))


def test_a_damaged_or_other_store_lends_nothing(project, caplog):
    data = DataSettings()
    first = prepare(data)[0]
    features = first.store / "pair_features.npy"
    damaged = features.read_bytes()[:-100]
    features.write_bytes(damaged)  # cut short after it was written
    caplog.set_level("INFO")
    second = prepare(data.model_copy(update={"split_seed": 11}))[0]
    assert "not shared (" in caplog.text
    assert (second.store / "pair_features.npy").stat().st_nlink == 1
    assert features.read_bytes() == damaged  # the donor's file was not written into
    np.testing.assert_array_equal(second.splits["val"].features, pair_features_of(second, "val"))

    caplog.clear()
    text = project / "data" / "text_and_bert.parquet"
    table = pq.read_table(text)
    names = table.column("name").to_pylist()
    names[0] = "another name"
    pq.write_table(
        table.set_column(table.schema.get_field_index("name"), "name", pa.array(names)), text
    )
    third = prepare(data.model_copy(update={"split_seed": 12}))[0]
    assert "shar" not in caplog.text
    assert (third.store / "pair_features.npy").stat().st_nlink == 1


def pair_features_of(prepared, split):
    pairs = prepared.splits[split]
    return pair_features(prepared.listings(), pairs.left, pairs.right)


def test_a_store_prepared_again_does_not_lend_to_itself(project, caplog):
    data = DataSettings()
    first = prepare(data)[0]
    items = first.store / "items.npy"
    items.write_bytes(items.read_bytes()[:-100])  # damaged: prepared again when next used
    caplog.set_level("INFO")
    again = ensure_prepared(data)
    assert "is damaged" in caplog.text and "shar" not in caplog.text
    assert again.store == first.store and again.items.matrix.shape == first.items.matrix.shape


def test_stores_of_the_embeddings_alone_share_too(project, caplog):
    data = DataSettings(listing_features=False)
    first = prepare(data)[0]
    caplog.set_level("INFO")
    second = ensure_prepared(data.model_copy(update={"split_seed": 11}))
    assert "Sharing the listings' arrays of" in caplog.text
    assert _feature_files(second.store) == _feature_files(first.store)
    assert second.splits["train"].features.shape == (len(second.splits["train"]), 0)
    np.testing.assert_array_equal(second.items.matrix, first.items.matrix)


def test_new_labels_share_the_listings_and_compute_only_the_pairs_features(project, caplog):
    data = DataSettings()
    first = prepare(data)[0]
    pairs = project / "data" / "train.parquet"
    table = pq.read_table(pairs)
    pq.write_table(table.slice(0, table.num_rows - 100), pairs)  # a labelling round's change
    caplog.set_level("INFO")
    second = ensure_prepared(data)
    assert "the labelled pairs' features computed" in caplog.text
    assert second.fingerprint != first.fingerprint
    assert (
        sum(len(s) for s in second.splits.values())
        == sum(len(s) for s in first.splits.values()) - 100
    )
    for name in ("items.npy", "features/name_char/data.npy", "text_model/terms.json"):
        assert (first.store / name).stat().st_ino == (second.store / name).stat().st_ino
    assert (second.store / "pair_features.npy").stat().st_nlink == 1
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            second.splits[split].features, pair_features_of(second, split)
        )


def test_dvc_repro_of_another_split_shares_the_stores_listings(project):
    """dvc.yaml keeps `prepared` between runs of its prepare stage (`persist`): DVC removes a
    stage's other outputs before it runs, which would leave nothing to share."""
    root = Path(__file__).parents[1]
    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["prepare"]
    Path("dvc.yaml").write_text(yaml.safe_dump({"stages": {"prepare": stage}}))
    shutil.copy(root / "settings.toml", "settings.toml")
    shutil.copytree(root / "matching_cli" / "data", "matching_cli/data")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, check=True, env=env)

    def repro(split_seed: int) -> str:
        settings = Path("settings.toml").read_text()
        Path("settings.toml").write_text(
            re.sub(r"(?m)^split_seed = .*$", f"split_seed = {split_seed}", settings)
        )
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "prepare"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    assert "Sharing" not in repro(1)
    assert "Sharing the listings' arrays of" in repro(2)
    assert len(stores(project / "prepared")) == 2

    # `dvc push` leaves the stores out (`push: false`): they are made from data/ (4.4 GB at the
    # real size), and a teammate's `dvc pull` need not fetch them.
    remote = project.parent / "remote"
    for command in (["remote", "add", "-d", "local", str(remote)], ["push", "-q"]):
        subprocess.run([sys.executable, "-m", "dvc", *command], check=True, env=env)
    assert not [p for p in remote.rglob("*") if p.is_file()]


def test_prepare_reuses_an_up_to_date_store_and_force_prepares_it_from_the_raw_files(project):
    assert invoke("prepare").exit_code == 0
    first = store()
    written = (first / "items.npy").stat()
    again = invoke("prepare")
    assert again.exit_code == 0 and "is up to date" in again.stderr, again.stderr
    assert "train" in again.stdout and "level-2 categories" in again.stdout  # the same summary
    assert (first / "items.npy").stat().st_mtime_ns == written.st_mtime_ns

    other_split = prepare(DataSettings(split_seed=99))[0].store  # shares the first's files
    assert (other_split / "items.npy").stat().st_ino == written.st_ino
    forced = invoke("prepare", "--force")
    assert forced.exit_code == 0 and "again from the raw files" in forced.stderr, forced.stderr
    assert "Sharing" not in forced.stderr
    rewritten = (first / "items.npy").stat()
    assert rewritten.st_ino != written.st_ino and rewritten.st_nlink == 1
    assert (other_split / "items.npy").stat().st_ino == written.st_ino  # left as it was
