"""`[model] head = "trees"` end to end: train, evaluate, predict, match, the registry and the served
model, on tiny demo data and the real MLflow store; the MLP's options refused with it; and `auto`,
the default, choosing between the heads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits

from tests.conftest import invoke, store, use_store

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "trees"
NAME = "tree-matcher"


@pytest.fixture(scope="module")
def trees_run(tmp_path_factory, demo_data, mlflow_uri):
    """One trees run, registered: (folder, run id, test metrics)."""
    folder = tmp_path_factory.mktemp("trees")
    shutil.copytree(demo_data, folder / "data")
    # OpenMP's spinning threads crawl when the suite shares the CPUs.
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(limits=1, user_api="openmp"):
        mp.chdir(folder)
        use_store(mp, mlflow_uri, EXPERIMENT)
        result = invoke(
            "train", "--head", "trees", "--seed", "7", "--register", NAME, "--json",
            "--report-dir", "report",
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    return folder, out["run_id"], out["metrics"]


@pytest.fixture
def in_trees(trees_run, monkeypatch, mlflow_uri):
    monkeypatch.chdir(trees_run[0])
    use_store(monkeypatch, mlflow_uri, EXPERIMENT)
    mlflow.set_tracking_uri(mlflow_uri)
    return trees_run


def _predicted(run: str, pairs: pd.DataFrame, *source: str) -> np.ndarray:
    pairs.to_parquet(f"pairs_{run}.parquet")
    result = invoke("predict", f"pairs_{run}.parquet", "-o", f"{run}.csv", *source)
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(f"{run}.csv")["score"].to_numpy()


def test_the_run_records_the_head_and_saves_trees_without_pickle(in_trees, tmp_path):
    folder, run_id, metrics = in_trees
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.head"] == "trees" and run.data.tags["head"] == "trees"
    # A small catalogue: fitted on train + validation, thresholds from out-of-fold scores.
    assert run.data.params["model.cross_fit"] == "auto"
    assert run.data.tags["auto_choices"].startswith("cross_fit, for ")
    assert run.data.metrics["n_trees"] >= 1 and "best_epoch" not in run.data.metrics
    assert run.data.metrics["average_precision"] == pytest.approx(metrics["average_precision"])
    assert metrics["average_precision"] > 0.8  # the demo's pair features carry real signal
    assert 0 < run.data.metrics["threshold"] < 1 and "group_threshold" in run.data.metrics
    plots = {Path(a.path).name for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"pr_curve.png", "metrics.png", "confusion_matrix.png", "loss_curves.png"}
    # The history by number of trees, in the run and in the report `dvc plots show` reads.
    history = pd.read_csv(folder / "report" / "history.csv")
    assert list(history) == ["trees", "train_loss", "val_loss", "val_pr_auc", "val_ap"]
    assert history["trees"].iloc[-1] == run.data.metrics["n_trees"] and len(history) <= 41
    # The MLP's name for it (the trees logged it as val_ap).
    logged = sorted(
        client.get_metric_history(run_id, "val_average_precision"), key=lambda m: m.step
    )
    assert [m.step for m in logged] == history["trees"].tolist()
    assert [m.value for m in logged] == pytest.approx(history["val_ap"].tolist())
    assert (folder / "report" / "loss_curves.png").stat().st_size > 0
    meta = json.loads((folder / "models" / run_id / "model.json").read_text())
    assert meta["model"]["head"] == "trees"
    weights = load_file(folder / "models" / run_id / "weights.safetensors")
    assert {"feature", "threshold", "roots", "baseline"} <= set(weights)
    served = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=tmp_path))
    assert not [p for p in served.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]


def test_evaluate_and_predict_give_the_trees_own_probabilities(in_trees):
    from matching_cli.data.feature_store import columns_for
    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.trees import ARRAYS, TreeEnsemble

    folder, run_id, metrics = in_trees
    evaluated = invoke("evaluate", "--run-id", run_id, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"] == pytest.approx(metrics, abs=1e-9)

    # The trees' columns rebuilt here from the prepared store: the pair features the model
    # names, then the cosine of each embedding block.
    meta = json.loads((folder / "models" / run_id / "model.json").read_text())["model"]
    weights = load_file(folder / "models" / run_id / "weights.safetensors")
    trees = TreeEnsemble(
        **{name: weights[name] for name in ARRAYS},
        baseline=float(weights["baseline"][0]),
        n_features=len(meta["feature_names"]) + len(meta["block_dims"]),
        max_depth=int(weights["max_depth"][0]),
    )
    prepared = load_prepared(store(folder))
    test = prepared.splits["test"]
    features = test.features[:, columns_for(prepared.feature_names, meta["feature_names"])]
    matrix, cosines, start = np.asarray(prepared.items.matrix, np.float64), [], 0
    for width in meta["block_dims"]:
        a, b = matrix[test.left, start : start + width], matrix[test.right, start : start + width]
        with np.errstate(invalid="ignore"):  # a listing without the embedding: NaN, missing
            cosines.append((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
        start += width
    expected = trees.predict_proba(np.column_stack([features, *cosines]))

    ids = prepared.items.ids
    pairs = pd.DataFrame({"variantid1": ids[test.left], "variantid2": ids[test.right]})
    np.testing.assert_allclose(_predicted("run", pairs, "--run-id", run_id), expected, atol=1e-6)
    by_alias = _predicted("alias", pairs, "--model", f"models:/{NAME}/1")
    np.testing.assert_allclose(by_alias, expected, atol=1e-6)


def test_the_served_model_and_match_score_like_predict(in_trees, tmp_path):
    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.saved import load_model
    from matching_cli.serving import request_fields, request_frame

    folder, run_id, _ = in_trees
    prepared = load_prepared(store(folder))
    test = prepared.splits["test"]
    ids1, ids2 = prepared.items.ids[test.left], prepared.items.ids[test.right]
    request = request_frame(
        folder / "data", ids1, ids2, request_fields(load_model(folder / "models" / run_id))
    )
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1", dst_path=str(tmp_path)).predict(request)
    predicted = _predicted("served", pd.DataFrame({"variantid1": ids1, "variantid2": ids2}))
    np.testing.assert_allclose(np.asarray(served).ravel(), predicted, atol=1e-6)

    matched = invoke("match", "--run-id", run_id, "-o", "out", "-k", "3", "--json")
    assert matched.exit_code == 0, matched.stderr
    pairs = pd.read_parquet("out/pairs.parquet")
    assert len(pairs) and pairs["score"].between(0, 1).all()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--epochs", "3"], "--epochs"),
        (["--lr", "0.01", "--hidden-size", "8"], "--lr, --hidden-size"),
        (["--device", "cuda"], "--device cuda"),
    ],
)
def test_the_mlps_options_are_refused_with_trees(project, options, named):
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    result = invoke("train", "--head", "trees", *options)
    assert result.exit_code == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    text = " ".join(result.stderr.split())
    assert f"{named}: only for the MLP head" in text, result.stderr
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_resume_keeps_its_runs_head(project):
    result = invoke("train", "--head", "trees", "--resume", "0123abcd")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "--head cannot change them" in " ".join(result.stderr.split()), result.stderr


def test_a_trees_run_is_not_resumed(in_trees):
    _, run_id, _ = in_trees
    result = invoke("train", "--resume", run_id)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert f"run {run_id} fitted gradient-boosted trees" in text, result.stderr


def test_the_head_comes_from_the_settings_and_torchrun_is_refused(project, monkeypatch):
    from matching_cli.errors import ModelError
    from matching_cli.jobs import train_job
    from matching_cli.scale import distributed
    from matching_cli.settings import Settings

    monkeypatch.setenv("MATCHING_MODEL__HEAD", "trees")
    refused = invoke("train", "--batch-size", "64")
    assert refused.exit_code == 1 and "--batch-size: only for the MLP" in refused.stderr
    monkeypatch.setattr(distributed, "launched", lambda: True)
    with pytest.raises(ModelError, match="torchrun trains the MLP head only"):
        train_job(Settings())
    monkeypatch.setenv("MATCHING_MODEL__HEAD", "forest")
    wrong = invoke("train")
    assert wrong.exit_code != 0 and "mlp" in wrong.stderr and "trees" in wrong.stderr


def test_auto_chooses_by_training_pairs_options_and_device():
    from matching_cli.choices import Head
    from matching_cli.model.network import ModelConfig
    from matching_cli.settings import AUTO_TREES_BELOW, ModelSettings, auto_head

    head, why = auto_head(2_100)
    assert head == Head.trees and "2,100 training pairs" in why
    assert auto_head(AUTO_TREES_BELOW - 1)[0] == Head.trees
    assert auto_head(AUTO_TREES_BELOW)[0] == Head.mlp
    assert auto_head(840_000, "cpu")[0] == Head.mlp
    assert auto_head(2_100, "cpu")[0] == Head.trees
    head, why = auto_head(2_100, "cuda:1")
    assert head == Head.mlp and "cuda:1" in why
    head, why = auto_head(2_100, mlp_options=["--epochs", "--lr"])
    assert head == Head.mlp and "--epochs, --lr" in why
    assert auto_head(None)[0] == Head.mlp  # torchrun: several processes
    with pytest.raises(ValueError, match="head auto is chosen when training starts"):
        ModelConfig.build(ModelSettings(), [2], [])


def test_auto_fits_trees_on_a_small_catalogue_and_the_mlp_when_its_options_are_given(project):
    import yaml

    # dvc.yaml's train stage, as `dvc repro` runs it: every metric and plot it names is written.
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    default = invoke(*stage["cmd"].split()[1:], "--seed", "7", "--json")
    assert default.exit_code == 0, default.stderr
    reports = [out for out in stage["outs"] if "reports/" in str(out)]
    for output in stage["metrics"] + stage["plots"] + reports:
        assert all(Path(path).is_file() for path in output), output
    # ... and `dvc plots show` draws dvc.yaml's plots of that history (a trees one: no epochs).
    plots = {"plots": yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]}
    Path("dvc.yaml").write_text(yaml.safe_dump(plots))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True, env=env)
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    drawn = json.loads(shown.stdout)
    assert not drawn.get("errors") and drawn["data"]["reports/train/history.csv"], shown.stdout
    given = invoke("train", "--epochs", "1", "--hidden-size", "8", "--json")
    assert given.exit_code == 0, given.stderr
    client = mlflow.MlflowClient()
    for result, head, why in [
        (default, "trees", "head trees, for "),
        (given, "mlp", "head mlp, as --epochs, --hidden-size"),
    ]:
        out = json.loads(result.stdout)
        assert out["head"] == head and ("n_trees" in out) == (head == "trees")
        run = client.get_run(out["run_id"])
        assert run.data.tags["head"] == head and run.data.params["model.head"] == head
        assert run.data.tags["auto_choices"].startswith(why), run.data.tags["auto_choices"]
        model = json.loads((Path("models") / run.info.run_id / "model.json").read_text())
        assert model["model"]["head"] == head
        assert f"head auto: {why.removeprefix('head ')}" in " ".join(result.stderr.split())


def test_the_trees_score_on_the_cpu_whatever_the_device():
    """On a GPU, predict and match would walk the trees in one process: they stay on the CPU's
    forked workers (the MLP scores on the device)."""
    from matching_cli.choices import Head
    from matching_cli.loading import scoring_device

    cuda = torch.device("cuda", 1)
    assert scoring_device(Head.trees, cuda) == torch.device("cpu")
    assert scoring_device(Head.mlp, cuda) == cuda


def test_a_listing_without_an_embedding_goes_the_missing_way():
    from matching_cli.model.network import ModelConfig
    from matching_cli.model.tree_head import tree_inputs
    from matching_cli.settings import ModelSettings

    config = ModelConfig.build(ModelSettings(head="trees"), [2, 3], ["f"])
    a = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 1, 1, 0]])
    b = torch.tensor([[1.0, 0, 0, 1, 0], [1, 1, 0, 0, 1]])
    x = tree_inputs(a, b, torch.tensor([[0.5], [0.25]]), config)
    np.testing.assert_allclose(x[:, 0], [0.5, 0.25])
    np.testing.assert_allclose(x[0, 1:], [1.0, 0.0])
    assert np.isnan(x[1, 1]) and x[1, 2] == 0  # a zero block is missing, not orthogonal


def test_a_description_of_the_other_head_is_refused(in_trees, tmp_path):
    from matching_cli.errors import ModelError
    from matching_cli.model.saved import META, load_model

    folder, run_id, _ = in_trees
    copy = shutil.copytree(folder / "models" / run_id, tmp_path / "model")
    assert load_model(copy).classifier.n_trees >= 1
    meta = json.loads((copy / META).read_text())
    meta["model"]["head"] = "mlp"
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="weights do not fit the model"):
        load_model(copy)


def test_the_cross_fit_scores_each_pair_by_trees_fitted_without_it():
    """Out-of-fold scores, stage by stage: the trees of the fold that held the pair out, their full
    score at stages past their number of trees; the model itself is fitted on every pair."""
    from sklearn.model_selection import StratifiedKFold

    from matching_cli.model.network import ModelConfig
    from matching_cli.model.train import DevicePairs
    from matching_cli.model.tree_head import cross_fit_trees, pair_inputs
    from matching_cli.model.trees import TreeSettings, fit
    from matching_cli.settings import ModelSettings

    rng = np.random.default_rng(0)
    items = torch.from_numpy(rng.normal(size=(1200, 3)).astype(np.float32))
    left, right = torch.arange(600), torch.arange(600, 1200)
    cosine = torch.nn.functional.cosine_similarity(items[left], items[right]).numpy()
    target = torch.from_numpy((cosine + rng.normal(0, 0.3, 600) > 0).astype(np.float32))
    config = ModelConfig.build(ModelSettings(head="trees"), [3], [])
    cross = cross_fit_trees(config, items, DevicePairs(left, right, target), folds=4, seed=3)

    x, y = pair_inputs(config, items, left, right, None), target.numpy()
    assert cross.model.n_trees == len(fit(x, y, TreeSettings(seed=3)).roots)
    assert cross.stages[-1] == cross.model.n_trees
    assert cross.logits.shape == (len(cross.stages), 600)
    past_a_folds_trees = 0
    for fitted, held_out in StratifiedKFold(4, shuffle=True, random_state=3).split(x, y):
        fold = fit(x[fitted], y[fitted], TreeSettings(seed=3))
        for k, stage in enumerate(cross.stages):
            expected = fold.staged_raw_scores(x[held_out], np.array([min(stage, len(fold.roots))]))
            assert cross.logits[k, held_out].numpy() == pytest.approx(expected[0])
            past_a_folds_trees += stage > len(fold.roots)
    assert past_a_folds_trees  # the capped stages were exercised
    probabilities = cross.probabilities()
    assert probabilities.shape == (600,) and ((probabilities > 0) & (probabilities < 1)).all()
    history = cross.history(items, seed=3)
    assert [h["trees"] for h in history] == cross.stages.tolist()
    assert history[-1]["val_ap"] > 0.8  # the cosine tells the classes apart, out of fold too


def test_cross_fit_is_chosen_by_size_and_needs_both_classes():
    from matching_cli.model.tree_head import cross_fit_folds
    from matching_cli.settings import CROSS_FIT_BELOW, cross_fit_choice

    wanted, why = cross_fit_choice("auto", 2_767)
    assert wanted and why == "cross_fit, for 2,767 train + validation pairs (below 20,000)"
    assert not cross_fit_choice("auto", CROSS_FIT_BELOW)[0]
    assert cross_fit_choice(True, 10**6) == (True, "")
    assert cross_fit_choice(False, 10) == (False, "")
    assert cross_fit_folds(np.array([0] * 50 + [1] * 40)) == 5
    assert cross_fit_folds(np.array([0] * 50 + [1] * 3)) == 3  # each fold holds a match
    assert cross_fit_folds(np.array([0] * 50 + [1])) == 0
