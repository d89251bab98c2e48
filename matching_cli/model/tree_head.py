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

from dataclasses import dataclass, replace
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
CROSS_FIT_FOLDS = 5


def history_stages(n_trees: int) -> np.ndarray:
    """The numbers of trees the history is measured at: HISTORY_POINTS of them, and the last."""
    return np.unique(np.append(np.arange(1, n_trees + 1, -(-n_trees // HISTORY_POINTS)), n_trees))


def staged_history(
    model: TreeClassifier, items: torch.Tensor, train: DevicePairs, val: DevicePairs, seed: int
) -> list[dict[str, float]]:
    """The trees' counterpart of the MLP's epochs: after the first k trees, the loss on (up to
    HISTORY_TRAIN_PAIRS of) the training pairs and the loss, PR-AUC and average precision on the
    validation pairs, at HISTORY_POINTS values of k; what `loss_curves.png` and `history.csv`
    show."""
    stages = history_stages(model.n_trees)
    val_logits = _staged(model, items, val, stages)
    return _history(model, items, train, stages, val_logits, val.target, seed)


def _staged(
    model: TreeClassifier, items: torch.Tensor, pairs: DevicePairs, stages: np.ndarray
) -> torch.Tensor:
    """(stages, pairs) log-odds of the first stages[i] trees."""
    x = pair_inputs(model.config, items, pairs.left, pairs.right, pairs.features)
    return torch.from_numpy(model.ensemble.staged_raw_scores(x, stages))


def _history(
    model: TreeClassifier,
    items: torch.Tensor,
    train: DevicePairs,
    stages: np.ndarray,
    val_logits: torch.Tensor,
    val_target: torch.Tensor,
    seed: int,
) -> list[dict[str, float]]:
    """`staged_history`'s rows from the validation pairs' staged log-odds."""
    if len(train) > HISTORY_TRAIN_PAIRS:
        some = np.sort(np.random.default_rng(seed).choice(len(train), HISTORY_TRAIN_PAIRS, False))
        train = take_pairs(train, torch.from_numpy(some).to(train.left.device))
    from matching_cli.model.train import logit_metrics  # the MLP's validation measures

    train_logits = _staged(model, items, train, stages)
    train_target, val_target = train.target.cpu().double(), val_target.cpu().double()
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


def take_pairs(pairs: DevicePairs, rows: torch.Tensor | slice) -> DevicePairs:
    return replace(
        pairs,
        left=pairs.left[rows],
        right=pairs.right[rows],
        target=pairs.target[rows],
        features=None if pairs.features is None else pairs.features[rows],
    )


def joined_pairs(first: DevicePairs, second: DevicePairs) -> DevicePairs:
    """The pairs of both, `first`'s then `second`'s."""
    features = None
    if first.features is not None and second.features is not None:
        features = torch.cat([first.features, second.features])
    return replace(
        first,
        left=torch.cat([first.left, second.left]),
        right=torch.cat([first.right, second.right]),
        target=torch.cat([first.target, second.target]),
        features=features,
    )


def cross_fit_folds(target: np.ndarray) -> int:
    """The folds a cross-fit of pairs with these labels gets: CROSS_FIT_FOLDS, fewer where a class
    has fewer pairs than that (each fold must hold both); 0 where a class has fewer than 2."""
    smaller = int(min((target == 1).sum(), (target == 0).sum()))
    return min(CROSS_FIT_FOLDS, smaller) if smaller >= 2 else 0


@dataclass
class CrossFit:
    """Trees fitted on the pairs of train and validation together (`model`), and those pairs'
    out-of-fold scores: each pair scored by trees fitted on the other folds, at every stage of
    `model`'s history (`logits`, (stages, pairs)). The out-of-fold scores stand in for
    validation: no pair is scored by trees that saw it."""

    model: TreeClassifier
    pairs: DevicePairs
    stages: np.ndarray
    logits: torch.Tensor

    def probabilities(self) -> np.ndarray:
        """The out-of-fold probability of each pair, at `model`'s full number of trees."""
        return torch.sigmoid(self.logits[-1]).numpy()

    def history(self, items: torch.Tensor, seed: int) -> list[dict[str, float]]:
        """`staged_history` with the out-of-fold scores as the validation's; the train loss is
        the final trees' on the pairs they were fitted on."""
        return _history(
            self.model, items, self.pairs, self.stages, self.logits, self.pairs.target, seed
        )


def cross_fit_trees(
    config: ModelConfig, items: torch.Tensor, pairs: DevicePairs, folds: int, seed: int
) -> CrossFit:
    """`fit_trees` on all `pairs`, and `folds` more fits, each on all folds but one, to score
    that one (stratified folds, shuffled by `seed`). A fold's trees stop where early stopping
    stops them; at a stage past their number, their full score counts."""
    from sklearn.model_selection import StratifiedKFold

    x = pair_inputs(config, items, pairs.left, pairs.right, pairs.features)
    y = pairs.target.cpu().numpy()
    model = TreeClassifier(config, fit(x, y, TreeSettings(seed=seed)))
    stages = history_stages(model.n_trees)
    logits = np.empty((len(stages), len(y)))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fitted, held_out in splitter.split(x, y):
        fold = fit(x[fitted], y[fitted], TreeSettings(seed=seed))
        # Stages past the fold's trees are its full score: walked once (the walk wants each once)
        capped, position = np.unique(np.minimum(stages, len(fold.roots)), return_inverse=True)
        logits[:, held_out] = fold.staged_raw_scores(x[held_out], capped)[position]
    return CrossFit(model, pairs, stages, torch.from_numpy(logits))
