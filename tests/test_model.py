import numpy as np
import pytest
import torch

from matching_cli.model import metrics
from matching_cli.model.network import ModelConfig, PairClassifier, PairScorer


def _pair(batch=64, dims=(8, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, sum(dims), generator=g), torch.randn(batch, sum(dims), generator=g)


def test_symmetric_features_score_swapped_pairs_the_same():
    torch.manual_seed(0)
    model = PairClassifier(ModelConfig(block_dims=(8, 16), hidden_size=32)).eval()
    a, b = _pair()
    assert torch.allclose(model(a, b), model(b, a), atol=1e-6)


def test_concat_features_are_not_symmetric():
    torch.manual_seed(0)
    model = PairClassifier(ModelConfig(block_dims=(8, 16), hidden_size=32, pair_features="concat"))
    a, b = _pair()
    assert not torch.allclose(model.eval()(a, b), model(b, a), atol=1e-4)


@pytest.mark.parametrize("features", ["symmetric", "concat"])
def test_small_model_overfits_one_batch(features):
    torch.manual_seed(0)
    model = PairClassifier(
        ModelConfig(block_dims=(8, 16), hidden_size=64, dropout=0.0, pair_features=features)
    )
    a, b = _pair(batch=32)
    target = (torch.arange(32) % 2).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    first = loss_fn(model(a, b), target).item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(model(a, b), target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 < first


def test_scorer_takes_one_tensor_and_returns_probabilities():
    model = PairClassifier(ModelConfig(block_dims=(8, 16), hidden_size=16)).eval()
    a, b = _pair(batch=5)
    probs = PairScorer(model)(torch.cat([a, b], dim=1))
    assert torch.allclose(probs, torch.sigmoid(model(a, b)))


def test_metrics_on_known_values():
    target = np.array([1, 1, 0, 0, 1, 0], dtype=np.float32)
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.2])
    assert metrics.pr_auc(target, score) == pytest.approx(metrics.pr_auc(target, score[::-1][::-1]))
    perfect = np.array([0.9, 0.8, 0.1, 0.1, 0.7, 0.2])
    assert metrics.pr_auc(target, perfect) == pytest.approx(1.0)
    threshold = metrics.best_f1_threshold(target, perfect)
    assert metrics.classification(target, perfect, threshold)["f1"] == 1.0
    result = metrics.classification(target, score, 0.65)
    assert result == {
        "accuracy": 4 / 6,
        "precision": 2 / 3,
        "recall": 2 / 3,
        "f1": pytest.approx(2 / 3),
    }


def test_category_metric_is_the_mean_over_categories_and_zero_without_positives():
    target = np.array([1, 0, 0, 0], dtype=np.float32)
    score = np.array([0.9, 0.1, 0.8, 0.2])
    category = np.array([0, 0, 1, 1])
    # Category 0 is perfectly ranked (1.0); category 1 has no positive (0.0).
    assert metrics.category_pr_auc(target, score, category) == pytest.approx(0.5)
    assert metrics.category_pr_auc(target, score, np.full(4, -1)) is None
