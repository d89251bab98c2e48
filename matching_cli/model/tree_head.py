"""The gradient-boosted head (`[model] head = "trees"`), called like the MLP.

`TreeClassifier` takes the same `(a, b, features)` and returns the same logits as `PairClassifier`,
so `predict_proba`, and through it the threshold, `evaluate`, `predict`, `match` and the served
model, score either head alike. Its trees are buffers of the module: `save_model` writes them to
the same safetensors file as the MLP's weights, and nothing is pickled.

What the trees read: the pair features from the listings' fields, then one cosine per embedding
block. The raw embedding interactions (|a-b|, a*b per dimension) that the MLP reads made the trees
worse on WDC computers (test AP 0.853 against 0.880 without them): dozens of noisy columns per
block, each split on alone. The block cosines tie on WDC's validation split and add about 0.03
validation AP on the demo data, where the name vector tells what the text features do not.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from matching_cli.model.network import ModelConfig
from matching_cli.model.trees import ARRAYS, TreeEnsemble, TreeSettings, fit

if TYPE_CHECKING:
    from matching_cli.model.train import DevicePairs

_SCALARS = ("baseline", "max_depth")
INPUT_BATCH = 65_536  # pairs whose embeddings are gathered at once while the inputs are built


def input_names(config: ModelConfig) -> list[str]:
    """The trees' columns, in order: the pair features, then a cosine per embedding block."""
    return [*config.feature_names, *(f"cosine_block_{k}" for k in range(len(config.block_dims)))]


def tree_inputs(
    a: torch.Tensor, b: torch.Tensor, features: torch.Tensor | None, config: ModelConfig
) -> np.ndarray:
    """(n, len(input_names)) float64: the pair features, then each block's cosine (NaN where a
    listing lacks that embedding, a zero row, so the trees send it the way missing values go)."""
    a64 = a.detach().float().cpu().numpy().astype(np.float64)
    b64 = b.detach().float().cpu().numpy().astype(np.float64)
    columns = []
    if config.feature_names:
        if features is None:
            raise ValueError("this model reads pair features: pass them")
        columns.append(features.detach().float().cpu().numpy().astype(np.float64))
    for x, y in zip(
        np.split(a64, np.cumsum(config.block_dims)[:-1], axis=1),
        np.split(b64, np.cumsum(config.block_dims)[:-1], axis=1),
        strict=True,
    ):
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = np.where(norms > 0, (x * y).sum(axis=1) / norms, np.nan)
        columns.append(cosine[:, None])
    return np.hstack(columns)


class TreeClassifier(nn.Module):
    """Boosted trees behind the MLP's call: logits of pairs of item rows and their pair features."""

    def __init__(self, config: ModelConfig, ensemble: TreeEnsemble):
        super().__init__()
        if ensemble.n_features != len(input_names(config)):
            raise ValueError(
                f"the trees read {ensemble.n_features} columns, the model gives "
                f"{len(input_names(config))}"
            )
        self.config = config
        self.ensemble = ensemble  # the host copy that numpy walks
        for name in ARRAYS:
            self.register_buffer(
                name, torch.from_numpy(np.ascontiguousarray(getattr(ensemble, name)))
            )
        self.register_buffer("baseline", torch.tensor([ensemble.baseline], dtype=torch.float64))
        self.register_buffer("max_depth", torch.tensor([ensemble.max_depth], dtype=torch.int64))

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict[str, torch.Tensor]) -> TreeClassifier:
        """The head `save_model` wrote; KeyError or ValueError when `weights` are not its trees."""
        unknown = set(weights) - {*ARRAYS, *_SCALARS}
        if unknown:
            raise ValueError(f"unexpected tensors {sorted(unknown)}")
        host = {name: weights[name].cpu().numpy() for name in ARRAYS}
        ensemble = TreeEnsemble(
            **host,
            baseline=float(weights["baseline"][0]),
            n_features=len(input_names(config)),
            max_depth=int(weights["max_depth"][0]),
        )
        return cls(config, ensemble)

    @property
    def n_trees(self) -> int:
        return len(self.ensemble.roots)

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.ensemble.raw_score(tree_inputs(a, b, features, self.config))
        return torch.from_numpy(logits).to(device=a.device, dtype=torch.float32)


def fit_trees(
    config: ModelConfig,
    items: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    target: torch.Tensor,
    features: torch.Tensor | None,
    seed: int,
) -> TreeClassifier:
    """Fit the trees on the pairs (left[k], right[k]); the number of trees is chosen by early
    stopping on a tenth of these pairs held out (`TreeSettings`), not on the validation split,
    which stays for the threshold and the reported validation metrics."""
    x = pair_inputs(config, items, left, right, features)
    ensemble = fit(x, target.cpu().numpy(), TreeSettings(seed=seed))
    return TreeClassifier(config, ensemble)


def pair_inputs(
    config: ModelConfig,
    items: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    features: torch.Tensor | None,
) -> np.ndarray:
    """`tree_inputs` of the pairs (left[k], right[k]), their embeddings gathered batch by batch."""
    parts = []
    for start in range(0, len(left), INPUT_BATCH):
        rows = slice(start, start + INPUT_BATCH)
        parts.append(
            tree_inputs(
                items[left[rows]],
                items[right[rows]],
                None if features is None else features[rows],
                config,
            )
        )
    return np.concatenate(parts) if parts else np.zeros((0, len(input_names(config))))


HISTORY_POINTS = 40  # stages of the trees' history: every n_trees / 40 trees, and the last
HISTORY_TRAIN_PAIRS = 50_000  # training pairs the history's train loss is measured on, at most


def staged_history(
    model: TreeClassifier, items: torch.Tensor, train: DevicePairs, val: DevicePairs, seed: int
) -> list[dict[str, float]]:
    """The trees' counterpart of the MLP's epochs: after the first k trees, the loss on (up to
    HISTORY_TRAIN_PAIRS of) the training pairs and the loss, PR-AUC and average precision on the
    validation pairs, at HISTORY_POINTS values of k; what `loss_curves.png` and `history.csv`
    show."""
    n_trees = model.n_trees
    stages = np.unique(np.append(np.arange(1, n_trees + 1, -(-n_trees // HISTORY_POINTS)), n_trees))
    if len(train) > HISTORY_TRAIN_PAIRS:
        some = np.sort(np.random.default_rng(seed).choice(len(train), HISTORY_TRAIN_PAIRS, False))
        rows = torch.from_numpy(some).to(train.left.device)
        train = replace(
            train,
            left=train.left[rows],
            right=train.right[rows],
            target=train.target[rows],
            features=None if train.features is None else train.features[rows],
        )
    from matching_cli.model.train import logit_metrics  # the MLP's validation measures

    def staged(pairs: DevicePairs) -> tuple[torch.Tensor, torch.Tensor]:
        """(stages, pairs) logits and the float64 targets."""
        x = pair_inputs(model.config, items, pairs.left, pairs.right, pairs.features)
        logits = torch.from_numpy(model.ensemble.staged_raw_scores(x, stages))
        return logits, pairs.target.cpu().double()

    (train_logits, train_target), (val_logits, val_target) = staged(train), staged(val)
    history = []
    for k, trees in enumerate(stages):
        loss, pr_auc, ap = logit_metrics(val_logits[k], val_target)
        train_loss = nn.functional.binary_cross_entropy_with_logits(train_logits[k], train_target)
        history.append(
            {
                "trees": int(trees),
                "train_loss": float(train_loss),
                "val_loss": loss,
                "val_pr_auc": pr_auc,
                "val_ap": ap,
            }
        )
    return history
