"""End to end through the CLI: prepare, train, evaluate, predict, on tiny demo data and a real MLflow store."""

from __future__ import annotations

import json
import shutil
import tempfile

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import FAST, invoke, store


def test_prepare_writes_disjoint_splits_and_reuses_them(project):
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    assert "train" in result.stdout and "disjoint" in result.stdout
    with np.load(store() / "pairs.npz") as z:
        split, left, right = z["split"], z["left"], z["right"]
    listings = [set(left[split == s]) | set(right[split == s]) for s in range(3)]
    assert (
        not listings[0] & listings[1]
        and not listings[0] & listings[2]
        and not listings[1] & listings[2]
    )
    assert {s: int((split == s).sum()) for s in range(3)}[0] > 0.6 * len(split)
    manifest = json.loads((store(project) / "manifest.json").read_text())
    assert [b["name"] for b in manifest["blocks"]] == [
        "name_bert_64",
        "main_pic_embeddings_resnet_v1",
    ]
    items = np.load(store() / "items.npy")
    norms = np.linalg.norm(items[:, :64], axis=1)
    assert np.allclose(norms[norms > 0], 1, atol=1e-5)
    # The descriptions' words, handed from the features stage's worker through files, are gone.
    assert not (store() / "features" / "description_words").exists()
    assert (store() / "features" / "text_rows").is_dir()


def test_train_logs_params_tags_metrics_figures_and_model(in_trained):
    _, run_id, metrics = in_trained
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.hidden_size"] == "32"
    assert run.data.params["train.lr"] == "0.00075"  # `auto`: 0.003 x sqrt(256 / 4096)
    for tag in ("git_commit", "data_fingerprint", "device", "torch_version"):
        assert run.data.tags[tag]
    history = mlflow.MlflowClient().get_metric_history(run_id, "val_pr_auc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    for name in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "pr_auc",
        "average_precision",
        "roc_auc",
        "category_pr_auc",
    ):
        assert run.data.metrics[name] == pytest.approx(metrics[name])
    assert 0.5 < metrics["pr_auc"] < 1.0
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "plots")}
    assert files == {
        f"plots/{n}"
        for n in ("loss_curves.png", "pr_curve.png", "metrics.png", "confusion_matrix.png")
    }
    saved = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "matching_model")}
    assert saved == {
        "matching_model/weights.safetensors",
        "matching_model/model.json",
        "matching_model/text_model",  # what predict reads the listings' text with, on any data
    }


def test_evaluate_reproduces_training_metrics(in_trained):
    _, run_id, metrics = in_trained
    result = invoke("evaluate", "--run-id", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"] == pytest.approx(metrics, abs=1e-9)
    logged = mlflow.MlflowClient().get_run(run_id)
    assert logged.data.metrics["eval_pr_auc"] == pytest.approx(metrics["pr_auc"])
    assert logged.info.status == "FINISHED"


def test_evaluate_without_run_id_takes_the_latest_training_run(in_trained):
    result = invoke("evaluate", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run_id"]


def test_predict_scores_every_pair_and_swapped_pairs_the_same(in_trained):
    _, run_id, _ = in_trained
    pairs = pd.read_parquet("data/test.parquet")
    pairs.rename(columns={"variantid1": "variantid2", "variantid2": "variantid1"}).to_parquet(
        "swapped.parquet"
    )
    assert invoke("predict", "data/test.parquet", "-o", "scores.csv").exit_code == 0
    assert (
        invoke("predict", "swapped.parquet", "-o", "swapped.csv", "--run-id", run_id).exit_code == 0
    )
    scores, swapped = pd.read_csv("scores.csv"), pd.read_csv("swapped.csv")
    assert list(scores.columns) == ["variantid1", "variantid2", "score"]
    assert len(scores) == len(pairs)
    assert (scores[["variantid1", "variantid2"]].to_numpy() == pairs.to_numpy()).all()
    assert scores["score"].between(0, 1).all() and scores["score"].std() > 0
    np.testing.assert_allclose(scores["score"], swapped["score"], atol=1e-6)


def test_predict_writes_parquet_where_the_output_is_named_so(in_trained):
    assert invoke("predict", "data/test.parquet", "-o", "scores.csv").exit_code == 0
    result = invoke("predict", "data/test.parquet", "-o", "scores.PARQUET", "--submission")
    assert result.exit_code == 0, result.stderr
    table = pq.read_table("scores.PARQUET")
    assert table.schema.names == ["variantid1", "variantid2", "target"]
    assert table.schema.types == [pa.int64(), pa.int64(), pa.float32()]
    scores = pd.read_csv("scores.csv")
    assert (table.column("variantid1").to_numpy() == scores["variantid1"].to_numpy()).all()
    # The CSV prints each float32 in at most 9 digits: equal to within one step.
    np.testing.assert_allclose(table.column("target").to_numpy(), scores["score"], atol=1e-7)


def test_loading_a_model_leaves_no_temporary_folder(in_trained, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert invoke("predict", "data/test.parquet", "-o", "scores.csv").exit_code == 0
    assert list(tmp_path.iterdir()) == []


def test_predict_submission_and_chunks_give_the_same_scores(in_trained):
    from matching_cli.data.feature_store import PairFeaturizer
    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.saved import load_model
    from matching_cli.predict import predict_file

    folder, run_id, _ = in_trained
    assert invoke("predict", "data/test.parquet", "-o", "sub.csv", "--submission").exit_code == 0
    submission = pd.read_csv("sub.csv")
    assert list(submission.columns) == ["variantid1", "variantid2", "target"]
    saved = load_model(folder / "models" / run_id)
    prepared = load_prepared(store(folder))
    names = saved.classifier.config.feature_names
    assert names  # the default model reads the listings' fields too
    predict_file(
        saved.classifier,
        prepared.items,
        torch.device("cpu"),
        folder / "data/test.parquet",
        folder / "small.csv",
        chunk_rows=7,
        featurizer=PairFeaturizer(prepared.listings(), names),
    )
    # Chunks of 7 rows are multiplied in another blocking than the whole file: the same scores
    # within a few float32 steps (1.5e-7 seen), where a pair's row mixed up is off by far more.
    np.testing.assert_allclose(pd.read_csv("small.csv")["score"], submission["target"], atol=1e-6)


def test_logged_mlflow_model_scores_like_the_cli(in_trained, tmp_path):
    """The served model takes the listings' raw fields and computes its features itself."""
    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.saved import load_model
    from matching_cli.serving import request_fields, request_frame

    folder, run_id, _ = in_trained
    prepared = load_prepared(store(folder))
    test = prepared.splits["test"]
    ids1, ids2 = prepared.items.ids[test.left], prepared.items.ids[test.right]
    fields = request_fields(load_model(folder / "models" / run_id))
    request = request_frame(folder / "data", ids1, ids2, fields)
    assert "name_1" in request and "name_bert_64_2" in request  # raw fields, as in the files
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    served = served.predict(request)
    pd.DataFrame({"variantid1": ids1, "variantid2": ids2}).to_parquet("test_split.parquet")
    assert (
        invoke("predict", "test_split.parquet", "-o", "cli.csv", "--run-id", run_id).exit_code == 0
    )
    np.testing.assert_allclose(
        np.asarray(served).ravel(), pd.read_csv("cli.csv")["score"], atol=1e-6
    )


def test_a_request_is_built_from_the_row_groups_that_hold_its_listings(tmp_path):
    """`train`'s example request, read from the row groups that hold its listings: a listing
    alone at the start of a row group is found, in each file's own order and row groups; a
    listing a file lacks gets None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matching_cli.serving import request_frame

    ids = np.arange(100, 110)
    names = pa.table({"variantid": ids, "name": [f"name {i}" for i in ids]})
    pq.write_table(names, tmp_path / "text_and_bert.parquet", row_group_size=3)
    pictures = pa.table({"variantid": ids[::-1][:8], "pic": [[float(i)] for i in ids[::-1][:8]]})
    pq.write_table(pictures, tmp_path / "images_embed.parquet", row_group_size=4)
    # Names' row groups: 100-102, 103-105, 106-108, 109; of the second only its first row.
    left, right = np.array([101, 108, 103]), np.array([107, 999, 100])
    frame = request_frame(tmp_path, left, right, ["name", "pic"])
    assert frame["name_1"].tolist() == ["name 101", "name 108", "name 103"]
    assert frame["name_2"][0] == "name 107" and pd.isna(frame["name_2"][1])
    assert frame["name_2"][2] == "name 100"
    assert frame["pic_1"].tolist() == [None, [108.0], [103.0]]  # 100, 101: not in the file
    assert frame["pic_2"].tolist() == [[107.0], None, None]


def test_without_listing_features_prepare_and_the_model_read_embeddings_only(project, monkeypatch):
    """The way to the real data on a machine with little memory: no features stage at all."""
    monkeypatch.setenv("MATCHING_DATA__LISTING_FEATURES", "false")
    result = invoke("train", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    assert not (store() / "features").exists()
    run_id = json.loads(result.stdout)["run_id"]
    from matching_cli.model.saved import load_model

    assert load_model(project / "models" / run_id).classifier.config.feature_names == ()
    assert invoke("predict", "data/test.parquet", "-o", "s.csv", "--run-id", run_id).exit_code == 0
    assert len(pd.read_csv("s.csv")) == len(pd.read_parquet("data/test.parquet"))
    # Text blocking reads the names' model codes, listing features this store lacks: it is off,
    # not an error calling the store damaged.
    result = invoke("match", "--run-id", run_id, "-o", "m", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Text blocking is off" in result.stderr
    assert json.loads(result.stdout)["counts"]["candidates"] > 0


def test_a_catalogue_without_an_image_table_trains_on_its_names(project, monkeypatch):
    """No image table: the default blocks are a one-line error naming the setting; with the name
    block alone, train and predict run and every pair's picture features are marked missing."""
    from matching_cli.data.pairs import feature_names

    (project / "data" / "images_embed.parquet").unlink()
    result = invoke("train", "--json")
    assert result.exit_code != 0
    assert "'main_pic_embeddings_resnet_v1' (data.blocks)" in result.stderr
    assert "no image table" in result.stderr and "[data] blocks" in result.stderr
    monkeypatch.setenv("MATCHING_DATA__BLOCKS", '["name_bert_64"]')
    result = invoke("train", "--json")
    assert result.exit_code == 0, result.stderr
    rows = np.load(store() / "pair_features.npy")
    assert (rows[:, feature_names().index("pic_missing")] == 1).all()
    assert (rows[:, feature_names().index("pic_best_cos")] == 0).all()
    assert invoke("predict", "data/test.parquet", "-o", "s.csv").exit_code == 0
    assert len(pd.read_csv("s.csv")) == len(pd.read_parquet("data/test.parquet"))


def test_vectors_stored_as_float32_prepare_as_float64_ones_do(project, monkeypatch):
    """Embeddings written as float32 lists (what a numpy float32 column becomes) arrive as a
    read-only view of Arrow's buffer: prepare normalises a copy, into the same item matrix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matching_cli.data.prepare import stores

    path = project / "data" / "text_and_bert.parquet"
    table = pq.read_table(path)
    column = table.schema.get_field_index("name_bert_64")
    # Every listing with a vector: a column without nulls is the one read without a copy.
    filled = [v if v is not None else [1.0] * 64 for v in table.column(column).to_pylist()]
    table = table.set_column(column, "name_bert_64", pa.array(filled, pa.list_(pa.float64())))
    pq.write_table(table, path)
    assert invoke("prepare").exit_code == 0
    wide = np.load(store() / "items.npy")
    narrow = table.column(column).cast(pa.list_(pa.float32()))
    pq.write_table(table.set_column(column, "name_bert_64", narrow), path)
    monkeypatch.setenv("MATCHING_DATA__PREPARED_DIR", str(project / "narrow"))
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    (narrow_store,) = stores(project / "narrow")
    np.testing.assert_allclose(np.load(narrow_store / "items.npy"), wide, atol=1e-6)


def test_same_seed_gives_the_same_metrics(project, trained):
    result = invoke("train", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"] == trained[2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_on_cuda(project):
    result = invoke("train", *FAST, "--device", "cuda", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["pr_auc"] > 0.5


def test_prepare_without_a_second_process_writes_the_same_store(project, monkeypatch):
    """On one core (or where processes cannot be forked) the features stage's worker runs first,
    here, and hands the descriptions' words over the same way: every array the same."""
    from matching_cli import workers
    from matching_cli.data.prepare import stores

    assert invoke("prepare").exit_code == 0
    forked = store()
    monkeypatch.setattr(workers, "can_fork", lambda: False)
    monkeypatch.setenv("MATCHING_DATA__PREPARED_DIR", str(project / "here"))
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    (here,) = stores(project / "here")
    arrays = sorted(p.relative_to(forked) for p in forked.rglob("*.npy"))
    assert arrays == sorted(p.relative_to(here) for p in here.rglob("*.npy"))
    assert any(p.parts[0] == "features" for p in arrays)
    for path in arrays:
        np.testing.assert_array_equal(np.load(forked / path), np.load(here / path), str(path))
    assert not (here / "features" / "description_words").exists()


def test_on_other_data_predict_reads_the_text_model_the_run_was_trained_with(
    in_trained, tmp_path, monkeypatch
):
    """Scored on other raw files (listings renamed, added), `prepare` fits a text model of their
    own, and `predict` read the listings' text with it: a pair's score then depended on the other
    listings of the folder, and differed from the served model's (which keeps the run's text model)
    by up to 0.04. Now the listings' text arrays are made with the run's text model, once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.saved import load_model
    from matching_cli.serving import request_fields, request_frame

    folder, run_id, _ = in_trained
    other = tmp_path / "data"
    shutil.copytree(folder / "data", other)
    texts = pq.read_table(other / "text_and_bert.parquet")
    names = [
        f"{name} новинка {i % 7}" if i % 3 else name
        for i, name in enumerate(texts.column("name").to_pylist())
    ]
    texts = texts.set_column(
        texts.schema.get_field_index("name"), "name", pa.array(names, pa.string())
    )
    pq.write_table(texts, other / "text_and_bert.parquet")
    monkeypatch.setenv("MATCHING_DATA__PREPARED_DIR", str(tmp_path / "prepared"))

    test = load_prepared(store(folder)).splits["test"]
    ids = load_prepared(store(folder)).items.ids
    ids1, ids2 = ids[test.left], ids[test.right]
    pd.DataFrame({"variantid1": ids1, "variantid2": ids2}).to_parquet(tmp_path / "pairs.parquet")
    args = (
        "predict",
        str(tmp_path / "pairs.parquet"),
        "--run-id",
        run_id,
        "--data-dir",
        str(other),
    )
    result = invoke(*args, "-o", str(tmp_path / "cli.csv"))
    assert result.exit_code == 0, result.stderr
    assert "making these listings' text features with its text model" in result.stderr
    fields = request_fields(load_model(folder / "models" / run_id))
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path / "served"))
    served = np.asarray(served.predict(request_frame(other, ids1, ids2, fields))).ravel()
    np.testing.assert_allclose(served, pd.read_csv(tmp_path / "cli.csv")["score"], atol=1e-6)
    # Made once, kept in the store: the next command reads them.
    again = invoke(*args, "-o", str(tmp_path / "again.csv"))
    assert again.exit_code == 0 and "making these listings' text" not in again.stderr
    # Cut short, they are made again, to the same scores.
    made = next((tmp_path / "prepared").glob("*/text_for/*/text_counts.npy"))
    made.write_bytes(made.read_bytes()[:-100])
    remade = invoke(*args, "-o", str(tmp_path / "remade.csv"))
    assert remade.exit_code == 0 and "is damaged" in remade.stderr, remade.stderr
    np.testing.assert_array_equal(
        pd.read_csv(tmp_path / "remade.csv")["score"], pd.read_csv(tmp_path / "cli.csv")["score"]
    )
    evaluated = invoke("evaluate", "--run-id", run_id, "--data-dir", str(other), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr


def test_the_served_model_reads_fields_in_the_shapes_a_client_sends(in_trained, tmp_path):
    """A request without the name columns gave a TypeError; a main picture sent as one flat vector
    counted as no picture, and attributes or categories sent as JSON objects (not their text) as
    unknown: each changed the score without a word."""
    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.saved import load_model
    from matching_cli.serving import request_fields, request_frame

    folder, run_id, _ = in_trained
    prepared = load_prepared(store(folder))
    test = prepared.splits["test"]
    ids1, ids2 = prepared.items.ids[test.left[:20]], prepared.items.ids[test.right[:20]]
    request = request_frame(
        folder / "data", ids1, ids2, request_fields(load_model(folder / "models" / run_id))
    )
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    expected = np.asarray(served.predict(request)).ravel()

    as_objects = request.copy()
    for column in ("characteristic_attributes_mapping_1", "categories_2"):
        as_objects[column] = [None if v is None else json.loads(v) for v in request[column]]
    flat = request.copy()
    main = "main_pic_embeddings_resnet_v1_1"
    flat[main] = [None if v is None or len(v) != 1 else list(v[0]) for v in request[main]]
    for variant in (as_objects, flat):
        np.testing.assert_allclose(np.asarray(served.predict(variant)).ravel(), expected, atol=1e-6)

    nameless = request.drop(columns=["name_1", "name_2"])
    null_names = request.assign(name_1=None, name_2=None)
    np.testing.assert_allclose(
        np.asarray(served.predict(nameless)).ravel(),
        np.asarray(served.predict(null_names)).ravel(),
        atol=1e-6,
    )
