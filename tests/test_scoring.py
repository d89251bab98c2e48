"""One match probability: `predict`, `match` and the served model score a pair alike."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from matching_cli.data.tables import Block
from matching_cli.errors import DataError
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.saved import SavedModel
from matching_cli.model.scoring import predict_proba
from matching_cli.serving import RawPairScorer
from matching_cli.settings import Settings
from tests.conftest import FAST, invoke


def test_predict_and_match_give_a_concat_model_pair_the_same_score(project):
    trained = invoke("train", *FAST, "--pair-features", "concat", "--json")
    assert trained.exit_code == 0, trained.stderr
    run_id = json.loads(trained.stdout)["run_id"]
    matched = invoke("match", "--run-id", run_id, "-o", "out", "-k", "5", "--all-pairs")
    assert matched.exit_code == 0, matched.stderr
    pairs = pq.read_table(project / "out/pairs.parquet").to_pandas()
    assert len(pairs) > 100
    pairs[["variantid1", "variantid2"]].to_parquet(project / "pairs.parquet")
    predicted = invoke("predict", "pairs.parquet", "-o", "scores.csv", "--run-id", run_id)
    assert predicted.exit_code == 0, predicted.stderr
    scores = pd.read_csv(project / "scores.csv")
    joined = pairs.merge(scores, on=["variantid1", "variantid2"], suffixes=("_match", ""))
    assert len(joined) == len(pairs)
    assert np.allclose(joined["score_match"], joined["score"], atol=1e-5)


def test_the_served_scorer_normalises_raw_embeddings_and_keeps_the_order():
    """Sent the parquet's raw vectors (not unit length; pictures as a list of vectors), the served
    model scores what `predict` scores: it normalises them itself."""
    torch.manual_seed(0)
    model = PairClassifier(ModelConfig(block_dims=(4, 3), pair_features="concat")).eval()
    blocks = [Block("text", "t.parquet", 4, 0), Block("pic", "p.parquet", 3, 4)]
    scorer = RawPairScorer(SavedModel(model, 0.5, blocks, Settings(), "x"), text_model=None)
    raw = np.random.default_rng(0).normal(size=(8, 7)) * 5
    frame = pd.DataFrame(
        {
            "text_1": list(raw[:4, :4]),
            "pic_1": [[list(v)] for v in raw[:4, 4:]],
            "text_2": list(raw[4:, :4]),
            "pic_2": [[list(v)] for v in raw[4:, 4:]],
        }
    )
    unit = np.concatenate(
        [raw[:, :4] / np.linalg.norm(raw[:, :4], axis=1, keepdims=True),
         raw[:, 4:] / np.linalg.norm(raw[:, 4:], axis=1, keepdims=True)], axis=1
    )  # fmt: skip
    items = torch.from_numpy(unit.astype(np.float32))
    left, right = torch.arange(4), torch.arange(4, 8)
    served = torch.from_numpy(scorer.score(frame))
    assert torch.allclose(served, predict_proba(model, items, left, right), atol=1e-6)
    # The rule is the order given: a concat model does score the reverse order otherwise.
    assert not torch.allclose(served, predict_proba(model, items, right, left), atol=1e-3)
    with pytest.raises(DataError, match="pic_2"):
        scorer.score(frame.drop(columns="pic_2"))


def test_chunks_leave_no_core_idle_and_stay_bounded(monkeypatch):
    """`match` and `predict` score chunks of `chunk_pairs` pairs in forked processes, a single
    chunk in this one: 749k candidates on two cores are eight chunks, not one."""
    from matching_cli.model import scoring

    monkeypatch.setattr(scoring, "available_cores", lambda: 2)
    assert scoring.chunk_pairs(749_454) == 93_682  # ceil(749,454 / 8)
    assert -(-749_454 // scoring.chunk_pairs(749_454)) == 8
    assert scoring.chunk_pairs(10_000_000) == scoring.chunk_pairs(None) == 1 << 20
    assert scoring.chunk_pairs(1_000) == 1 << 16
