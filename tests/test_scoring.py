"""One match probability: `predict`, `match` and the served model score a pair alike."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from matching_cli.model.network import ModelConfig, PairClassifier, PairScorer
from matching_cli.model.scoring import predict_proba
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


def test_the_served_scorer_gives_predict_proba():
    torch.manual_seed(0)
    model = PairClassifier(ModelConfig(block_dims=(4, 3), pair_features="concat")).eval()
    items = torch.randn(10, 7)
    left, right = torch.tensor([0, 1, 2, 3]), torch.tensor([9, 8, 7, 6])
    served = PairScorer(model)(torch.cat([items[left], items[right]], dim=1))
    assert torch.allclose(served, predict_proba(model, items, left, right), atol=1e-6)
    # The rule is the order given: a concat model does score the reverse order otherwise.
    assert not torch.allclose(served, predict_proba(model, items, right, left), atol=1e-3)
