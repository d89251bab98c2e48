import numpy as np
import pytest
import torch

from matching_cli.choices import StopReason
from matching_cli.model import metrics
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.train import Callback, DeviceData, DevicePairs, StopFlag, fit
from matching_cli.settings import TrainSettings


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


def test_metrics_on_known_values():
    target = np.array([1, 1, 0, 0, 1, 0], dtype=np.float32)
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.2])
    # Ranked: 1 1 0 1 0 0. Trapezoids over recall from (0, 1): 1/3 + 1/3 + (2/3 + 3/4) / 2 / 3.
    assert metrics.pr_auc(target, score) == pytest.approx(65 / 72)
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


def test_a_constant_score_looks_good_to_pr_auc_but_not_to_average_precision():
    # Why epochs are chosen by AP: a collapsed model (one score for every pair) gets
    # (1 + positive share) / 2 from the trapezoid PR-AUC, and only the positive share from AP.
    target = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0], dtype=float)
    constant = np.full(10, 0.5)
    assert metrics.pr_auc(target, constant) == pytest.approx(0.65)
    assert metrics.average_precision(target, constant) == pytest.approx(0.3)
    assert metrics.average_precision(np.ones(4), np.arange(4.0)) == 0.0


class _WeightsPerEpoch(Callback):
    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.weights = model, []

    def on_epoch_end(self, stats, state) -> None:
        self.weights.append({k: v.clone() for k, v in self.model.state_dict().items()})


def test_fit_stops_after_patience_epochs_without_improvement_and_keeps_the_best_weights():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    items = torch.randn(40, 24, generator=g)

    def pairs(n: int) -> DevicePairs:
        left, right = torch.randint(0, 40, (2, n), generator=g)
        # Random labels: validation cannot keep improving, so early stopping must end the run.
        return DevicePairs(left, right, torch.randint(0, 2, (n,), generator=g).float())

    data = DeviceData(items, {"train": pairs(256), "val": pairs(64)})
    model = PairClassifier(ModelConfig(block_dims=(8, 16), hidden_size=16))
    settings = TrainSettings(epochs=40, batch_size=64, lr=0.05, patience=3)
    recorder = _WeightsPerEpoch(model)
    state = fit(model, data, settings, [recorder], StopFlag())
    scores = [s.val_ap for s in state.history]
    assert state.stopped == StopReason.early_stopping and state.epoch < settings.epochs
    assert state.best_epoch == 1 + scores.index(max(scores))
    assert state.epoch == state.best_epoch + settings.patience  # no sooner, no later
    assert all(s < state.best_ap for s in scores[state.best_epoch :])
    best, last = recorder.weights[state.best_epoch - 1], recorder.weights[-1]
    now = model.state_dict()
    assert all(torch.equal(now[k], best[k]) for k in best)
    assert not all(torch.equal(now[k], last[k]) for k in last)
