"""Bad input, round two (issue 12), cases 4, 6, 8, 9, 14 and 15, and the same review of the pair
features, the [features] and [match] settings and the per-fingerprint prepared stores.

Each test names its case of the issue; each failed on the code before the fix."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matching_cli.data import prepare as prepare_module
from matching_cli.data.prepare import ensure_prepared, is_fresh
from matching_cli.errors import ModelError
from matching_cli.model.saved import META, load_model
from matching_cli.settings import load_settings
from tests.conftest import FAST, invoke, store
from tests.test_bad_input2 import _one_line_error

TEXT = Path("data/text_and_bert.parquet")
BERT = "name_bert_64"
TAIL = 65536  # what the old fingerprint read: the size and the last 64 KiB


# 4. Any change of a source file's content is noticed, also one that keeps its size and last bytes.


def _write_uncompressed(table: pa.Table, path: Path) -> None:
    # Plain encoding, no compression: swapping values between rows changes neither the size nor
    # the footer (statistics are the same minimum and maximum).
    pq.write_table(table, path, compression="none", use_dictionary=False)


def test_a_change_keeping_size_and_last_bytes_is_noticed(project):
    table = pq.read_table(TEXT)
    _write_uncompressed(table, TEXT)
    assert invoke("prepare").exit_code == 0
    before = TEXT.read_bytes()
    vectors = table.column(BERT).to_pylist()
    swapped = vectors[1:20] + vectors[:1] + vectors[20:]  # 20 listings' vectors rotated
    column = pa.array(swapped, type=table.schema.field(BERT).type)
    _write_uncompressed(table.set_column(table.schema.get_field_index(BERT), BERT, column), TEXT)
    after = TEXT.read_bytes()
    assert len(after) == len(before) and after[-TAIL:] == before[-TAIL:] and after != before

    data = load_settings().data
    assert not is_fresh(data)
    prepared = ensure_prepared(data)
    first = prepared.items.rows(np.array([table.column("variantid")[0].as_py()]))[0]
    block = prepared.items.blocks[0]
    assert block.name == BERT
    row = np.asarray(prepared.items.matrix[first, block.offset : block.offset + block.dim])
    expected = np.asarray(swapped[0], dtype=np.float32)  # the new vector, L2-normalised
    np.testing.assert_allclose(row, expected / np.linalg.norm(expected), rtol=1e-5)


def test_an_untouched_source_file_is_not_hashed_again(project, monkeypatch):
    assert invoke("prepare").exit_code == 0
    manifest = json.loads((store() / "manifest.json").read_text())
    assert set(manifest["source_stats"]) == set(manifest["sources"])

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(prepare_module, "content_digest", no_hashing)
    assert is_fresh(load_settings().data)
    os.utime(TEXT)  # touched, not changed: hashed again, and still the same store
    monkeypatch.undo()
    monkeypatch.chdir(project)
    assert is_fresh(load_settings().data)


def test_a_cold_prepare_hashes_each_source_file_once(project, monkeypatch):
    hashed: list[str] = []

    def counted(path: Path) -> str:
        hashed.append(path.name)
        return real_digest(path)

    real_digest = prepare_module.content_digest
    monkeypatch.setattr(prepare_module, "content_digest", counted)
    assert invoke("prepare").exit_code == 0  # no store yet: each file hashed, once
    sources = json.loads((store() / "manifest.json").read_text())["sources"]
    assert sorted(hashed) == sorted(sources)
    hashed.clear()
    assert invoke("prepare", "--force").exit_code == 0  # the store's manifest knows them
    assert hashed == []


# 6. --resume refuses options it cannot honour; --epochs continues to a new total, or says there
# is nothing to train, without reopening the run.


def _train_two_epochs() -> str:
    result = invoke("train", *FAST[2:], "--epochs", "2", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["run_id"]


def test_resume_refuses_options_it_cannot_honour(project):
    run_id = _train_two_epochs()
    before = mlflow.MlflowClient().get_run(run_id).info
    result = invoke("train", "--resume", run_id, "--epochs", "6", "--lr", "1e-4", "--seed", "1")
    _one_line_error(result, "--lr, --seed", "cannot change")
    nothing = invoke("train", "--resume", run_id)
    _one_line_error(nothing, f"run {run_id} has trained 2 epochs", "nothing to train")
    fewer = invoke("train", "--resume", run_id, "--epochs", "2")
    _one_line_error(fewer, "--epochs 2 leaves nothing to train")
    after = mlflow.MlflowClient().get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time)  # not reopened


def test_resume_with_more_epochs_continues_to_the_new_total(project):
    run_id = _train_two_epochs()
    result = invoke("train", "--resume", run_id, "--epochs", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert f"Continuing run {run_id} to 3 epochs" in " ".join(result.stderr.split())
    checkpoint = json.loads(Path(f"models/{run_id}/checkpoint/checkpoint.json").read_text())
    assert checkpoint["epoch"] == 3
    history = mlflow.MlflowClient().get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]


# 8. Damaged local state: a store is prepared again, saying so; a checkpoint is named.


@pytest.mark.parametrize(
    "name",
    [
        "manifest.json",
        "items.npy",
        "pair_features.npy",
        "features/pictures.npy",
        "features/text_rows/data.npy",
        "text_model/char_idf.npy",  # trained on, the served model logged with it did not load
        "text_model/terms.json",
    ],
)
def test_a_damaged_prepared_store_is_prepared_again(project, name):
    assert invoke("prepare").exit_code == 0
    damaged = store() / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = invoke("train", *FAST[2:], "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    assert "damaged" in result.stderr and "again" in result.stderr, result.stderr
    assert np.load(store() / "items.npy").shape[0] > 0


def test_a_damaged_listing_array_is_prepared_again_by_prepare_and_predict(project):
    # `predict` said "damaged; run `matching prepare`", and `prepare` called the store up to date.
    run_id = _train_two_epochs()
    damaged = store() / "features" / "text_rows" / "data.npy"
    damaged.write_bytes(damaged.read_bytes()[:-1000])
    result = invoke("prepare")
    assert result.exit_code == 0 and "damaged" in result.stderr, result.stderr
    assert "up to date" not in result.stderr
    damaged.write_bytes(damaged.read_bytes()[:-1000])
    result = invoke("predict", "data/test.parquet", "--run-id", run_id, "-o", "s.csv")
    assert result.exit_code == 0 and "damaged" in result.stderr, result.stderr
    assert len(Path("s.csv").read_text().splitlines()) > 1


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("checkpoint.json", lambda b: b[: len(b) // 2]),
        ("checkpoint.json", lambda b: b'{"epoch": 2}'),
        ("state.safetensors", lambda b: b[: len(b) // 2]),
    ],
)
def test_a_damaged_checkpoint_is_named_before_resuming(project, name, damage):
    run_id = _train_two_epochs()
    path = Path(f"models/{run_id}/checkpoint/{name}")
    path.write_bytes(damage(path.read_bytes()))
    result = invoke("train", "--resume", run_id, "--epochs", "3")
    _one_line_error(result, str(path), "damaged", "cannot be resumed")
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FINISHED"


def _without(key: str):
    return lambda b: json.dumps({k: v for k, v in json.loads(b).items() if k != key}).encode()


@pytest.mark.parametrize("key", ["param_groups", "history", "best_epoch"])
def test_a_checkpoint_lacking_part_of_its_state_is_named_not_a_traceback(project, key):
    run_id = _train_two_epochs()
    path = Path(f"models/{run_id}/checkpoint/checkpoint.json")
    path.write_bytes(_without(key)(path.read_bytes()))
    result = invoke("train", "--resume", run_id, "--epochs", "3")
    _one_line_error(result, str(path.parent), "damaged", "cannot be resumed")


def test_an_early_stopped_run_is_not_resumed_without_epochs(project):
    run_id = _train_two_epochs()
    path = Path(f"models/{run_id}/checkpoint/checkpoint.json")
    meta = json.loads(path.read_text())
    # As a run of 6 epochs, patience 1, that stopped after epoch 2 (its best was epoch 1) leaves it.
    meta["settings"]["train"].update(epochs=6, patience=1)
    meta["best_epoch"] = 1
    path.write_text(json.dumps(meta))
    before = mlflow.MlflowClient().get_run(run_id).info
    result = invoke("train", "--resume", run_id)
    _one_line_error(result, f"run {run_id} stopped early after epoch 2", "--epochs above 2")
    after = mlflow.MlflowClient().get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time)  # not reopened


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda meta: meta.pop("threshold"), "not a model description"),
        (lambda meta: meta.update(threshold="high"), "not a model description"),
        (lambda meta: (meta.pop("model"), meta.update(format=99)), "model format 99"),
    ],
)
def test_a_damaged_or_newer_model_json_is_named(in_trained, tmp_path, change, expected):
    folder, run_id, _ = in_trained
    copy = tmp_path / "model"
    shutil.copytree(folder / "models" / run_id, copy, ignore=shutil.ignore_patterns("checkpoint"))
    meta = json.loads((copy / META).read_text())
    change(meta)
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=expected) as caught:
        load_model(copy)
    assert str(copy / META) in str(caught.value)


# 9. Values out of range: refused when the settings are read, before anything runs.


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["prepare"], {"MATCHING_DATA__SPLIT_SEED": "-1"}, "data.split_seed"),
        (["download", "--synthetic", "--seed", "-1", "--data-dir", "d"], {}, "synthetic_seed"),
        (["train", "--seed", str(2**62)], {}, "train.seed"),
        (["train", "--lr", "inf"], {}, "train.lr"),
        (["train", "--lr", "nan"], {}, "train.lr"),
        (["download", "--synthetic", "--pairs", str(10**12), "--data-dir", "d"], {}, "10,000,000"),
    ],
)
def test_values_out_of_range_are_refused_at_once(project, monkeypatch, args, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = mlflow.MlflowClient()
    runs = len(client.search_runs([client.get_experiment_by_name("tests").experiment_id]))
    started = time.perf_counter()
    _one_line_error(invoke(*args), "invalid settings", expected)
    assert time.perf_counter() - started < 10
    assert len(client.search_runs([client.get_experiment_by_name("tests").experiment_id])) == runs
    assert not Path("d").exists()


def test_a_diverging_loss_stops_training_with_a_clear_message(project):
    result = invoke("train", *FAST[2:4], "--epochs", "2", "--lr", "1e10")
    _one_line_error(result, "training diverged in epoch 1", "lower it (--lr)")
    assert "ValueError" not in result.stderr and "NaN" in result.stderr


# 14. evaluate --pairs with one class: what can be computed is reported, the rest named.


def test_evaluate_on_matches_only_reports_recall(in_trained, tmp_path):
    pairs = pq.read_table("data/train.parquet").to_pandas()
    matches = pairs[pairs["target"] == 1].head(60)
    path = tmp_path / "matches_only.parquet"
    matches.to_parquet(path, index=False)
    result = invoke("evaluate", "--pairs", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert 0 < metrics["recall"] <= 1 and "pr_auc" not in metrics and "roc_auc" not in metrics
    said = " ".join(result.stderr.split())
    assert "every pair is a match" in said and "need both classes" in said


def test_evaluate_reads_labelled_pairs_from_a_csv_too(in_trained, tmp_path):
    pairs = pq.read_table("data/test.parquet").to_pandas().head(80)
    pairs["target"] = np.arange(len(pairs)) % 2  # labels of this test's own: only equality counts
    pairs.to_parquet(tmp_path / "pairs.parquet", index=False)
    # Written by pandas: the target as 0.0/1.0, as some editions of the data store it.
    pairs.astype({"target": float}).to_csv(tmp_path / "pairs.csv", index=False)
    results = [
        invoke("evaluate", "--pairs", str(tmp_path / name), "--json")
        for name in ("pairs.parquet", "pairs.csv")
    ]
    assert all(r.exit_code == 0 for r in results), results[-1].stderr
    from_parquet, from_csv = (json.loads(r.stdout)["metrics"] for r in results)
    assert from_csv == from_parquet and from_csv["average_precision"] > 0
    (tmp_path / "bad.csv").write_text("variantid1,variantid2,target\n1,2,yes\n")
    result = invoke("evaluate", "--pairs", str(tmp_path / "bad.csv"))
    told = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "column 'target' holds text that is no number" in told, told
    assert "'yes'" in told


# 15. Reading commands never create a tracking store; an unreachable server fails in seconds.


@pytest.mark.parametrize("uri", ["sqlite:///typo/mlflow.db", "sqlite:///mlfow.db", "./mlrns"])
@pytest.mark.parametrize(
    "command", [["evaluate"], ["predict", "data/test.parquet", "-o", "s.csv"], ["match"]]
)
def test_a_reading_command_does_not_create_a_store(project, monkeypatch, uri, command):
    monkeypatch.setenv("MATCHING_MLFLOW__TRACKING_URI", uri)
    before = sorted(p.name for p in Path(".").iterdir())
    _one_line_error(invoke(*command), uri, "does not exist")
    assert sorted(p.name for p in Path(".").iterdir()) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["evaluate"], ["train", "--epochs", "1"]])
def test_an_unreachable_tracking_server_fails_in_seconds(project, monkeypatch, command):
    for name in ("TIMEOUT", "MAX_RETRIES", "BACKOFF_FACTOR"):  # restored after the test
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{name}", os.environ.get(name, "1"))
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MATCHING_MLFLOW__TRACKING_URI", uri)
    monkeypatch.setenv("MATCHING_MLFLOW__TIMEOUT_S", "2")
    started = time.perf_counter()
    result = invoke(*command)
    _one_line_error(result, uri, "no answer after 3 tries", "Connection refused")
    assert time.perf_counter() - started < 15
    assert "Retrying" not in result.stderr


# The review repeated for what this session added: [features], [match], prepared stores.


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MATCHING_FEATURES__FAMILIES": '["text", "colour"]'}, "features.families"),
        ({"MATCHING_MATCH__K": "0"}, "match.k"),
        ({"MATCHING_MATCH__JOIN_THRESHOLD": "nan"}, "match.join_threshold"),
        ({"MATCHING_TRAIN__WEIGHT_DECAY": "inf"}, "train.weight_decay"),
        ({"MATCHING_DOWNLOAD__TIMEOUT_S": "inf"}, "download.timeout_s"),
    ],
)
def test_sibling_settings_out_of_range_are_named(project, monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _one_line_error(invoke("prepare"), "invalid settings", expected)


def test_the_models_own_store_damaged_with_the_raw_files_gone_is_one_line(project):
    run_id = _train_two_epochs()
    shutil.copy("data/test.parquet", "pairs.parquet")
    damaged = store() / "pair_features.npy"
    damaged.write_bytes(damaged.read_bytes()[:100])
    shutil.rmtree("data")
    result = invoke("predict", "pairs.parquet", "--run-id", run_id, "-o", "s.csv")
    _one_line_error(result, "prepared data is damaged", "raw files in data are gone")


def test_predict_refuses_an_output_folder_that_does_not_exist_before_any_work(project):
    # It was told once the data was prepared and the model loaded (40 s at the real size).
    result = invoke("predict", "data/test.parquet", "-o", "missing/out.csv")
    _one_line_error(result, "--output", "missing does not exist; create it first")
    assert not Path("prepared").exists() and not Path("missing").exists()


# Catalogues of other shapes (the 2026-12-08 audit of odd catalogues).

_ID_COLUMNS = {
    "text_and_bert.parquet": ["variantid"],
    "attributes.parquet": ["variantid"],
    "images_embed.parquet": ["variantid"],
    "train.parquet": ["variantid1", "variantid2"],
}


def _ids_as_uint64(offset: int) -> None:
    for name, columns in _ID_COLUMNS.items():
        table = pq.read_table(Path("data") / name)
        for column in columns:
            values = table.column(column).to_numpy().astype(np.uint64) + np.uint64(offset)
            table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
        pq.write_table(table, Path("data") / name)


def test_uint64_ids_meet_across_tables_as_int64_ones_do(project):
    """Ids stored as uint64 were looked up as float64 against the int64 item ids: above 2^53 ids
    met their neighbours', and above 2^63 no listing's fields were found (every text, attribute
    and category feature 0 and missing, without a word), then `train` died in a traceback."""
    assert invoke("prepare").exit_code == 0
    expected = np.load(next(Path("prepared").glob("*/pair_features.npy")))
    shutil.rmtree("prepared")
    _ids_as_uint64(2**60)  # int64 can hold them, float64 not exactly
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    assert "has no row for" not in result.stderr
    np.testing.assert_array_equal(
        np.load(next(Path("prepared").glob("*/pair_features.npy"))), expected
    )


def test_uint64_ids_above_the_int64_range_are_refused_in_one_line(project):
    _ids_as_uint64(2**63)
    _one_line_error(invoke("prepare"), "column 'variantid' holds ids above 2^63 - 1", "renumber")
    assert not Path("prepared").exists()


def test_a_partitioned_parquet_folder_is_named_as_one(project):
    table = pq.read_table("data/train.parquet")
    Path("data/train.parquet").unlink()
    Path("data/train.parquet").mkdir()
    pq.write_table(table, "data/train.parquet/part-0.parquet")
    _one_line_error(invoke("prepare"), "data/train.parquet: is a folder", "write it as one file")


def test_dictionary_encoded_text_columns_read_as_their_values(project):
    assert invoke("prepare").exit_code == 0
    expected = np.load(next(Path("prepared").glob("*/pair_features.npy")))
    shutil.rmtree("prepared")
    for name, columns in (
        ("text_and_bert.parquet", ["name", "description"]),
        ("attributes.parquet", ["categories", "characteristic_attributes_mapping"]),
    ):
        table = pq.read_table(Path("data") / name)
        for column in columns:
            encoded = table.column(column).dictionary_encode()  # pandas' category dtype
            table = table.set_column(table.schema.get_field_index(column), column, encoded)
        pq.write_table(table, Path("data") / name)
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(
        np.load(next(Path("prepared").glob("*/pair_features.npy"))), expected
    )


def _edit_column(name: str, column: str, change) -> None:
    table = pq.read_table(Path("data") / name)
    values = pa.array(change(table.column(column).to_pylist()), pa.string())
    pq.write_table(
        table.set_column(table.schema.get_field_index(column), column, values), Path("data") / name
    )


@pytest.mark.parametrize(
    ("file", "column", "change", "told"),
    [
        # Keys other than DATA.md's "1", "2", ...: every category unknown, without a word.
        (
            "attributes.parquet",
            "categories",
            lambda values: [
                json.dumps({f"level{k}": v for k, v in json.loads(t).items()}) for t in values
            ],
            "no 'categories' value has the key \"2\"",
        ),
        # Cut at a length limit: the cut entry was read as if whole, without a word.
        (
            "attributes.parquet",
            "characteristic_attributes_mapping",
            lambda values: [t[: len(t) // 2] if i % 5 == 0 else t for i, t in enumerate(values)],
            "values end before their JSON object does",
        ),
        (
            "text_and_bert.parquet",
            "name",
            lambda values: [None] * len(values),
            "column 'name' holds no text in any row",
        ),
        (
            "attributes.parquet",
            "characteristic_attributes_mapping",
            lambda values: ["{}"] * len(values),
            "names no attribute in any row",
        ),
    ],
)
def test_fields_that_say_nothing_are_told(project, file, column, change, told):
    _edit_column(file, column, change)
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    assert told in " ".join(result.stderr.split()), result.stderr


def test_a_handful_of_labelled_pairs_is_warned_of(project):
    table = pq.read_table("data/train.parquet")
    pq.write_table(table.slice(0, 60), "data/train.parquet")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    told = " ".join(result.stderr.split())
    assert "The val split holds" in told and "The test split holds" in told, result.stderr
    assert "label more pairs" in told


def test_evaluate_pairs_from_a_file_whose_name_mlflow_refuses(in_trained, tmp_path):
    """`pairs (1).csv` made the metric `eval_pairs (1)_accuracy`, which MLflow refused after the
    scoring, in a traceback, with the figures logged already."""
    folder, run_id, _ = in_trained
    labelled = pq.read_table(folder / "data" / "train.parquet").slice(0, 200).to_pandas()
    path = tmp_path / "pairs (1).csv"
    labelled[["variantid1", "variantid2", "target"]].to_csv(path, index=False)
    result = invoke("evaluate", "--run-id", run_id, "--pairs", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert "eval_pairs__1__accuracy" in mlflow.MlflowClient().get_run(run_id).data.metrics


def test_a_report_dir_that_cannot_be_made_is_told_before_training(project):
    Path("notes.txt").write_text("mine")
    result = invoke("train", *FAST[2:], "--report-dir", "notes.txt/reports")
    _one_line_error(result, "--report-dir notes.txt/reports", "is a file, not a folder")
    assert "training" not in result.stderr.lower()
    # Tried before the work, not left behind by a command that fails after the check.
    failed = invoke("evaluate", "--run-id", "f" * 32, "--report-dir", "new/reports")
    assert failed.exit_code == 1 and not Path("new").exists()


def test_predict_does_not_write_over_what_it_reads(in_trained, tmp_path):
    """`-o` equal to the pairs file replaced it (its labels gone); `-o data/train.parquet` put
    scores where the training labels were."""
    folder = in_trained[0]
    pairs = tmp_path / "pairs.csv"
    pq.read_table(folder / "data" / "test.parquet").to_pandas().head(20).to_csv(pairs, index=False)
    before = pairs.read_bytes()
    _one_line_error(
        invoke("predict", str(pairs), "-o", str(pairs)), "is the pairs file being scored"
    )
    assert pairs.read_bytes() == before
    train = (folder / "data" / "train.parquet").read_bytes()
    result = invoke("predict", str(pairs), "-o", "data/train.parquet")
    _one_line_error(result, "is in the data folder data", "write the scores elsewhere")
    assert (folder / "data" / "train.parquet").read_bytes() == train


def test_evaluating_training_pairs_is_warned_of_and_csv_labels_may_be_true_false(
    in_trained, tmp_path
):
    """The model's own training pairs scored 0.963 accuracy against 0.870 on the test split, with
    no word; pandas writes a boolean label as True/False, which the CSV reader refused."""
    folder, run_id, _ = in_trained
    labelled = pq.read_table(folder / "data" / "train.parquet").to_pandas().head(300)
    path = tmp_path / "seen.csv"
    labelled.assign(target=labelled["target"].astype(bool))[
        ["variantid1", "variantid2", "target"]
    ].to_csv(path, index=False)
    assert "True" in path.read_text()
    result = invoke("evaluate", "--run-id", run_id, "--pairs", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    told = " ".join(result.stderr.split())
    assert "pairs are the model's training pairs" in told and "flatter the model" in told, told


def test_a_missing_experiment_and_an_output_under_a_file_are_one_line(in_trained, tmp_path):
    result = invoke("evaluate", "--experiment", "nosuch")
    _one_line_error(result, "experiment 'nosuch' does not exist")
    assert "Cannot retrieve experiment" not in result.stderr  # MLflow's own warning, before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    result = invoke("predict", "data/test.parquet", "-o", str(notes / "scores.csv"))
    _one_line_error(result, f"--output {notes}/scores.csv: {notes} is a file, not a folder")


def test_a_listing_in_two_rows_with_different_fields_is_warned_of(project):
    """The embeddings of a repeated variantid must agree (else refused); its name or categories
    were read from the last row without a word."""
    for name, column in (("text_and_bert.parquet", "name"), ("attributes.parquet", "categories")):
        table = pq.read_table(Path("data") / name)
        twice = table.slice(0, 5)
        values = pa.array([f"{v} (другой)" for v in twice.column(column).to_pylist()], pa.string())
        twice = twice.set_column(twice.schema.get_field_index(column), column, values)
        pq.write_table(pa.concat_tables([table, twice]), Path("data") / name)
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    told = " ".join(result.stderr.split())
    assert "5 variantids appear in several rows with different 'name'" in told, told
    assert "5 variantids appear in several rows with different 'categories'" in told, told


@pytest.mark.parametrize("name", ["scores.csv.gz", "scores.json"])
def test_predict_refuses_a_name_that_promises_another_form(in_trained, tmp_path, name):
    """`-o scores.csv.gz` wrote plain CSV, which `pd.read_csv` then failed to decompress."""
    result = invoke("predict", "data/test.parquet", "-o", str(tmp_path / name))
    _one_line_error(result, "name it *.csv or *.parquet")
    assert not (tmp_path / name).exists()


def test_match_flags_turn_a_setting_off_and_a_failed_match_leaves_no_folders(
    in_trained, tmp_path, monkeypatch
):
    """`same_category = true` in the settings could not be turned off on the command line; `-o
    a/b/c` made a/b before a failure that followed."""
    monkeypatch.setenv("MATCHING_MATCH__SAME_CATEGORY", "true")
    result = invoke("match", "--no-same-category", "-o", str(tmp_path / "m"), "--json")
    assert result.exit_code == 0, result.stderr
    params = mlflow.MlflowClient().get_run(json.loads(result.stdout)["run_id"]).data.params
    assert params["same_category"] == "False"
    failed = invoke("match", "--run-id", "f" * 32, "-o", str(tmp_path / "new" / "x" / "y"))
    assert failed.exit_code == 1 and not (tmp_path / "new").exists()


def test_a_store_made_by_other_code_is_made_again(project, monkeypatch):
    """dvc.yaml reruns prepare when `matching_cli/data` changes, and prepare called the store made
    by the old code up to date: dvc.lock then recorded the new code beside the old arrays."""
    assert invoke("prepare").exit_code == 0
    monkeypatch.setattr(prepare_module, "code_digest", lambda: "another version of data/")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    assert "up to date" not in result.stderr
    assert json.loads(store().joinpath("manifest.json").read_text())["code"] == (
        "another version of data/"
    )
