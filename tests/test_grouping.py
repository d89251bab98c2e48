"""Grouping in `match`: the threshold chosen by validation precision, and candidates from the text."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pytest
import scipy.sparse as sp

from matching_cli.match.blocking import Candidates
from matching_cli.match.text_blocking import (
    TextBlocking,
    shared_token_pairs,
    with_text_candidates,
)
from matching_cli.model.metrics import precision_threshold
from matching_cli.model.saved import META, load_model
from tests.conftest import invoke


def test_precision_threshold_is_the_lowest_reaching_the_target():
    target = np.array([0, 1, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    # At >= 0.3: 3 of 4 right (0.75); at >= 0.6: 3 of 3; at >= 0.2: 4 of 5 (0.8).
    assert precision_threshold(target, score, 0.8) == pytest.approx(0.2)
    assert precision_threshold(target, score, 0.9) == pytest.approx(0.6)
    assert precision_threshold(np.array([0, 0]), np.array([0.2, 0.9]), 0.5) is None


def test_a_model_saved_without_a_group_threshold_groups_by_its_f1_threshold(in_trained, tmp_path):
    folder, run_id, _ = in_trained
    model = folder / "models" / run_id
    saved = load_model(model)
    assert saved.group_threshold is not None
    assert saved.grouping_threshold == saved.group_threshold
    old = tmp_path / "old"
    shutil.copytree(model, old)
    meta = json.loads((old / META).read_text())
    del meta["group_threshold"]  # a model.json written before the field existed
    (old / META).write_text(json.dumps(meta))
    older = load_model(old)
    assert older.group_threshold is None and older.grouping_threshold == older.threshold


def test_match_groups_by_the_group_threshold_unless_told_otherwise(in_trained):
    folder, run_id, _ = in_trained
    group = json.loads((folder / "models" / run_id / META).read_text())["group_threshold"]
    logged = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert logged["group_threshold"] == pytest.approx(group)
    for extra, expected, source in (
        ([], group, "group_precision"),
        (["--threshold", "0.97"], 0.97, "option"),
    ):
        result = invoke("match", "--run-id", run_id, "-o", "out", "--json", *extra)
        assert result.exit_code == 0, result.stderr
        params = mlflow.MlflowClient().get_run(json.loads(result.stdout)["run_id"]).data.params
        assert float(params["threshold"]) == pytest.approx(expected)
        assert params["threshold_from"] == source


def tokens(*rows: list[int], width: int = 10) -> sp.csr_matrix:
    dense = np.zeros((len(rows), width), np.float32)
    for i, columns in enumerate(rows):
        dense[i, columns] = 1
    return sp.csr_matrix(dense)


# Token 0: rows 0, 1 (rare); token 1: rows 2, 3, 4 (rare); token 2: every row (too common at cap 5);
# token 3: row 5 alone (pairs with nobody).
CODES = tokens([0, 2], [0, 2], [1, 2], [1, 2], [1, 2], [2, 3])


def test_listings_sharing_a_rare_token_are_paired():
    codes = CODES.copy()
    left, right = shared_token_pairs(codes, np.arange(6), TextBlocking(cap=5, per_listing=10))
    assert set(zip(left.tolist(), right.tolist(), strict=True)) == {(0, 1), (2, 3), (2, 4), (3, 4)}
    # The listings' arrays, which the featurizer scores with next, are untouched.
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(codes, part), getattr(CODES, part))


def test_text_pairs_are_bounded_per_listing_and_kept_to_queries_and_groups():
    everyone = tokens(*[[0]] * 6)  # one token in 6 names
    wide = TextBlocking(cap=6, per_listing=10)
    assert len(shared_token_pairs(everyone, np.arange(6), wide)[0]) == 15
    left, right = shared_token_pairs(everyone, np.arange(6), TextBlocking(cap=6, per_listing=1))
    assert len(left) <= 6 and set(np.concatenate([left, right])) == set(range(6))
    left, right = shared_token_pairs(everyone, np.array([4]), wide)
    assert ((left == 4) | (right == 4)).all() and len(left) == 5
    groups = np.array([0, 0, 0, 1, 1, 1])
    left, right = shared_token_pairs(everyone, np.arange(6), wide, groups)
    assert (groups[left] == groups[right]).all() and len(left) == 6


def test_text_candidates_join_the_embedding_ones_once_with_their_cosines():
    matrix = np.array([[1, 0], [1, 1], [0, 2], [3, 0]], np.float32)
    embedding = Candidates(
        np.array([0, 1]), np.array([1, 2]), np.array([0.7, 0.7], np.float32), {"exact": 4}
    )
    merged = with_text_candidates(embedding, matrix, np.array([0, 1]), np.array([3, 2]))
    assert list(zip(merged.left.tolist(), merged.right.tolist(), strict=True)) == [
        (0, 1),
        (0, 3),
        (1, 2),
    ]
    np.testing.assert_allclose(merged.similarity, [0.7, 1.0, 0.7], atol=1e-6)
    assert merged.methods == {"exact": 4, "text": 1}


def test_text_blocking_finds_more_true_pairs_in_match(in_trained, tmp_path):
    _, run_id, _ = in_trained
    found = {}
    for switch in ("false", "true"):
        config = tmp_path / f"{switch}.toml"
        config.write_text(f"[match]\ntext_blocking = {switch}\n")
        result = invoke(
            "--config", str(config), "match", "--run-id", run_id, "-o", switch, "-k", "2", "--json"
        )
        assert result.exit_code == 0, result.stderr
        found[switch] = json.loads(result.stdout)
    off, on = found["false"], found["true"]
    assert on["counts"]["candidates"] > off["counts"]["candidates"]
    assert on["quality"]["blocking_true_pair_recall"] > off["quality"]["blocking_true_pair_recall"]
