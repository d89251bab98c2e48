"""`matching train` with `[model] head = "trees"`: gradient-boosted trees fitted in one call, then
the same threshold, test, figures, saved model and MLflow run as the MLP (`jobs.py`).

No epochs, batches, learning rate, device or checkpoints: the trees fit on the CPU and choose
their own number of trees. On a small catalogue they are cross-fitted (`[model] cross_fit`): fitted
on train and validation together, the thresholds and the validation history taken from 5-fold
out-of-fold scores. torchrun's processes are refused here; `cli.py` refuses the MLP's
options given on the command line; a resumed run is an MLP's and goes on as one (`jobs.py`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from matching_cli import tracking
from matching_cli.choices import Head
from matching_cli.data.feature_store import columns_for
from matching_cli.data.prepare import Prepared, ensure_prepared
from matching_cli.errors import ModelError
from matching_cli.jobs import (
    RunResult,
    TrainSetup,
    finalize_model,
    model_feature_names,
    run_tags,
    test_model,
)
from matching_cli.model.network import ModelConfig
from matching_cli.model.train import DevicePairs, Shard, to_device
from matching_cli.model.tree_head import (
    cross_fit_folds,
    cross_fit_trees,
    fit_trees,
    joined_pairs,
    staged_history,
)
from matching_cli.progress import NullReporter, Reporter
from matching_cli.settings import Settings, cross_fit_choice

log = logging.getLogger(__name__)
CPU = torch.device("cpu")


def train_trees_job(
    settings: Settings,
    reporter: Reporter | None = None,
    run_name: str | None = None,
    report_dir: Path | None = None,
    register: str | None = None,
    prepared: Prepared | None = None,
    head_choice: str = "",
) -> RunResult:
    """Fit the trees on the train split, pick the thresholds on validation, test, save and track.
    `prepared`: the data when they are already read; `head_choice`: why `head = "auto"` became
    the trees, for the run's record."""
    from matching_cli.scale import distributed

    if distributed.launched():
        raise ModelError(
            "torchrun trains the MLP head only; run `matching train` alone for head = trees"
        )
    reporter = reporter or NullReporter()
    tracking.configure(settings.mlflow)
    if prepared is None:
        prepared = ensure_prepared(settings.data, reporter)
    names = model_feature_names(settings, prepared)
    config = ModelConfig.build(settings.model, [b.dim for b in prepared.items.blocks], names)
    data = to_device(prepared, CPU, columns_for(prepared.feature_names, names))
    folds, cross_choice = _cross_fit_folds(settings, data.splits["train"], data.splits["val"])
    _say_what_the_trees_read(config, len(data.splits["train"]), folds)
    tags = run_tags(prepared, CPU, config.head, head_choice, cross_choice)
    with tracking.run("train", run_name, tags) as run:
        tracking.log_settings(settings)
        clock = time.perf_counter()
        train, val, seed = data.splits["train"], data.splits["val"], settings.train.seed
        held_out = None
        if folds:
            fitting = reporter.task(
                f"fitting gradient-boosted trees, {folds + 1} times", total=None
            )
            cross = cross_fit_trees(config, data.items, joined_pairs(train, val), folds, seed)
            model, held_out = cross.model, (cross.pairs.target.numpy(), cross.probabilities())
        else:
            fitting = reporter.task("fitting gradient-boosted trees", total=None)
            model = fit_trees(
                config, data.items, train.left, train.right, train.target, train.features, seed
            )
        seconds = time.perf_counter() - clock
        fitting.close()
        log.info("Fitted %d trees in %.1f s", model.n_trees, seconds)
        tracking.log_metrics({"n_trees": model.n_trees, "fit_seconds": seconds})
        finishing = reporter.task("testing and saving the model", total=None)
        if folds:
            history = cross.history(data.items, seed)
        else:
            history = staged_history(model, data.items, train, val, seed)
        tracking.log_history(history, step="trees")
        setup = TrainSetup(settings, CPU, prepared, data, model, None, None, {}, Shard())
        saved, folder = finalize_model(setup, run.id, held_out)
        metrics = test_model(setup, saved, history, None, report_dir, run.id)
        finishing.close()
        registered = None
        if register is not None:
            registered = tracking.register_model(run.id, register)
    log.info("Model saved in %s", folder)
    return RunResult(
        run.id,
        metrics,
        run.status,
        saved.threshold,
        registered=registered,
        head=Head.trees,
        n_trees=model.n_trees,
    )


def _cross_fit_folds(settings: Settings, train: DevicePairs, val: DevicePairs) -> tuple[int, str]:
    """The folds of the cross-fit (0: none, the trees fit on train and the thresholds are chosen
    on validation), and why, for the run's `auto_choices` tag."""
    wanted, why = cross_fit_choice(settings.model.cross_fit, len(train) + len(val))
    if not wanted:
        return 0, why
    folds = cross_fit_folds(torch.cat([train.target, val.target]).cpu().numpy())
    if not folds:
        log.warning(
            "Too few matches or non-matches in train + validation to cross-fit the trees: "
            "they fit on train, the thresholds chosen on validation"
        )
        return 0, "no cross_fit, too few pairs of one class"
    return folds, why


def _say_what_the_trees_read(config: ModelConfig, train_pairs: int, folds: int) -> None:
    if not config.feature_names:
        log.warning(
            "The trees read no pair features, only a cosine per embedding block; "
            "the MLP head (head = mlp) reads the embeddings in full"
        )
    log.info(
        "Fitting trees on the CPU, %s train pairs: %d pair features and a cosine per embedding "
        "block (%d)",
        f"{train_pairs:,}",
        len(config.feature_names),
        len(config.block_dims),
    )
    if folds:
        log.info(
            "Cross-fitting: the trees fit on train and validation together; the thresholds are "
            "chosen on %d-fold out-of-fold scores ([model] cross_fit)",
            folds,
        )
