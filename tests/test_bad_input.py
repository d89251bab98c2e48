"""Bad input, case by case: a non-zero exit, one or two lines naming what is wrong, no traceback,
and nothing written where the result would go."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from matching_cli.data.prepare import ensure_prepared
from matching_cli.settings import load_settings
from tests.conftest import TRAINED_EXPERIMENT, invoke, scratch_experiment, use_store

DATA = Path("data")


def _edit(name: str, change: Callable[[pa.Table], pa.Table]) -> None:
    path = DATA / name
    pq.write_table(change(pq.read_table(path)), path)


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _vectors(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def _bert_with(change: Callable[[list], list]) -> Callable[[pa.Table], pa.Table]:
    def apply(table: pa.Table) -> pa.Table:
        values = change(_vectors(table, "name_bert_64"))
        return _set_column(table, "name_bert_64", pa.array(values, pa.list_(pa.float64())))

    return apply


def _first_rows(n: int, value: Callable[[list], list | None]) -> Callable[[list], list]:
    return lambda rows: [value(r) if i < n else r for i, r in enumerate(rows)]


def _targets(values: Callable[[int], pa.Array]) -> Callable[[pa.Table], pa.Table]:
    return lambda t: _set_column(t, "target", values(t.num_rows))


def _duplicate_listing(table: pa.Table) -> pa.Table:
    first = table.slice(0, 1)
    vector = [-x for x in first.column("name_bert_64")[0].as_py()]
    changed = _set_column(first, "name_bert_64", pa.array([vector], pa.list_(pa.float64())))
    return pa.concat_tables([table, changed])


def _write_bytes(name: str, data: bytes) -> Callable[[], None]:
    return lambda: (DATA / name).write_bytes(data)


def _truncate(name: str) -> None:
    path = DATA / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


PREPARE_CASES = {
    "data folder missing": (lambda: shutil.rmtree(DATA), "data folder data not found"),
    "data folder empty": (
        lambda: [p.unlink() for p in DATA.iterdir()],
        "train.parquet: file not found; run `matching download` (or --synthetic)",
    ),
    "text table missing": (
        lambda: (DATA / "text_and_bert.parquet").unlink(),
        "text_and_bert.parquet: file not found; a catalogue needs train.parquet and "
        "text_and_bert.parquet (README: Data)",
    ),
    "two different image tables": (
        lambda: _edit_copy_image_table(),
        "both images_embed.parquet and resnet.parquet exist and differ",
    ),
    "random bytes": (
        _write_bytes("train.parquet", np.random.default_rng(0).bytes(5000)),
        "train.parquet: not a readable parquet file",
    ),
    "truncated file": (
        lambda: _truncate("text_and_bert.parquet"),
        "text_and_bert.parquet: not a readable parquet file",
    ),
    "csv renamed parquet": (
        _write_bytes("train.parquet", b"variantid1,variantid2,target\n1,2,1\n"),
        "train.parquet: not a readable parquet file",
    ),
    "missing column": (
        lambda: _edit("train.parquet", lambda t: t.drop_columns(["target"])),
        "train.parquet: column 'target' is missing",
    ),
    "wrong column type": (
        lambda: _edit(
            "text_and_bert.parquet",
            lambda t: _set_column(t, "name_bert_64", pc.cast(t.column("name"), pa.string())),
        ),
        "column 'name_bert_64' should be list<double>",
    ),
    "vectors of another width than the column's name": (
        lambda: _edit(
            "text_and_bert.parquet", _bert_with(lambda rows: [r[:10] if r else r for r in rows])
        ),
        "column 'name_bert_64' holds vectors of length 10, not the 64 of the competition's column "
        "of that name; name the column for its vectors",
    ),
    "text table of no rows": (
        lambda: _edit("text_and_bert.parquet", lambda t: t.slice(0, 0)),
        "text_and_bert.parquet: holds no rows",
    ),
    "every embedding null": (
        lambda: _edit("text_and_bert.parquet", _bert_with(lambda rows: [None] * len(rows))),
        "column 'name_bert_64' holds no vector at all",
    ),
    # Zeros where a catalogue has no vector: with none at all, the trees' fit crashed.
    "every embedding zero": (
        lambda: _edit("text_and_bert.parquet", _bert_with(lambda rows: [[0.0] * 64] * len(rows))),
        "column 'name_bert_64' holds no vector at all (every row is null or zero); leave it out",
    ),
    "duplicated variantid with different vectors": (
        lambda: _edit("text_and_bert.parquet", _duplicate_listing),
        "appear more than once with different 'name_bert_64' vectors",
    ),
    "targets other than 0/1": (
        lambda: _edit("train.parquet", _targets(lambda n: pa.array(np.arange(n) % 3, pa.int64()))),
        "column 'target' has",
    ),
    "null targets": (
        lambda: _edit(
            "train.parquet", _targets(lambda n: pa.array([None] + [1] * (n - 1), pa.int64()))
        ),
        "column 'target' has 1 nulls",
    ),
    "all one class": (
        lambda: _edit("train.parquet", _targets(lambda n: pa.array(np.ones(n, np.int64)))),
        "every pair has target 1",
    ),
    "empty pairs file": (
        lambda: _edit("train.parquet", lambda t: t.slice(0, 0)),
        "train.parquet: holds no pairs",
    ),
}


def _edit_copy_image_table() -> None:
    table = pq.read_table(DATA / "images_embed.parquet")
    pq.write_table(table.slice(1), DATA / "resnet.parquet")


def _check_error(result, expected: str) -> None:
    assert result.exit_code == 1, result.stdout + result.stderr
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    # Progress log lines (a stage that started) may come first; the error itself stays short.
    error = [line for line in result.stderr.strip().splitlines() if " INFO " not in line[:15]]
    assert len(error) <= 2, result.stderr


@pytest.mark.parametrize("case", list(PREPARE_CASES))
def test_prepare_rejects_bad_data(project, case):
    damage, expected = PREPARE_CASES[case]
    damage()
    with warnings.catch_warnings():  # numpy's warnings are noise on the user's terminal
        warnings.simplefilter("error", RuntimeWarning)
        result = invoke("prepare")
    _check_error(result, expected)
    assert not Path("prepared").exists()


# A few unusable vectors among many (DATA.md: every embedding is nullable): read as missing, as a
# null one is, with a warning that names a listing to fix; before, the whole catalogue was refused.
UNUSABLE_VECTORS = {
    "a vector of another length": (
        _first_rows(3, lambda r: (r or [0.0]) + [1.0]),
        "of length [65]",
    ),
    "NaN inside vectors": (_first_rows(2, lambda r: [float("nan")] * 64), "with NaN, inf"),
    "inf inside vectors": (_first_rows(1, lambda r: [float("inf")] * 64), "with NaN, inf"),
    # Finite in the file, inf as float32: numpy warned of an overflow.
    "values beyond float32": (_first_rows(1, lambda r: [1e300] * 64), "beyond float32's range"),
}


@pytest.mark.parametrize("case", list(UNUSABLE_VECTORS))
def test_a_few_unusable_vectors_are_read_as_missing_and_named(project, case):
    change, why = UNUSABLE_VECTORS[case]
    _edit("text_and_bert.parquet", _bert_with(change))
    first = pq.read_table(DATA / "text_and_bert.parquet").column("variantid")[0].as_py()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    told = " ".join(result.stderr.split())
    assert "'name_bert_64' vectors are" in told and why in told, result.stderr
    assert f"read as missing, as a null one is (e.g. variantid {first}" in told, result.stderr
    items = ensure_prepared(load_settings().data).items
    assert items.missing[items.rows(np.array([first]))[0], 0]


SETTINGS_CASES = {
    "not valid TOML": ("[train\nepochs = 3\n", [], "settings.toml: not valid TOML"),
    "unknown key": ("[train]\nepochz = 3\n", [], "unknown key train.epochz"),
    "wrong type": (
        "[train]\nepochs = 'many'\n",
        [],
        "train.epochs (from settings.toml): Input should be a valid integer",
    ),
    "negative batch size": (
        "[train]\nbatch_size = -5\n",
        [],
        "train.batch_size (from settings.toml): Input should be greater than 0",
    ),
    "--epochs 0": (
        "",
        ["--epochs", "0"],
        "train.epochs (from the command's option): Input should be greater than 0",
    ),
}


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_bad_settings(project, case):
    text, options, expected = SETTINGS_CASES[case]
    Path("settings.toml").write_text(text)
    _check_error(invoke("train", *options), expected)
    assert not Path("prepared").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_absent_device(project, device):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has CUDA")
    _check_error(invoke("train", "--device", device), f"--device {device}: CUDA is not available")


def test_missing_config_file(project):
    _check_error(invoke("--config", "nope.toml", "prepare"), "nope.toml")


@pytest.fixture
def in_trained_copy(trained, tmp_path, monkeypatch, mlflow_uri):
    """The trained run's folder, copied so a test may damage it."""
    folder, run_id, _ = trained
    shutil.copytree(folder / "data", tmp_path / "data")
    shutil.copytree(folder / "prepared", tmp_path / "prepared")
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, mlflow_uri, TRAINED_EXPERIMENT)
    return run_id


def test_predict_input_without_variantid_columns(in_trained_copy):
    pq.write_table(pa.table({"a": [1], "b": [2]}), "pairs.parquet")
    _check_error(
        invoke("predict", "pairs.parquet", "-o", "out.csv"), "column 'variantid1' is missing"
    )
    assert not Path("out.csv").exists()


def test_predict_pairs_with_unknown_listings(in_trained_copy):
    test = pq.read_table(DATA / "test.parquet")
    unknown = pa.table(
        {"variantid1": [-1, -2], "variantid2": test.column("variantid2").to_pylist()[:2]}
    )
    pq.write_table(pa.concat_tables([test, unknown]), "pairs.parquet")
    _check_error(invoke("predict", "pairs.parquet", "-o", "out.csv"), "2 of ")
    assert not Path("out.csv").exists()
    assert (
        invoke("predict", "pairs.parquet", "-o", "out.csv", "--on-missing", "drop").exit_code == 0
    )
    assert len(Path("out.csv").read_text().splitlines()) == test.num_rows + 1


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("missing/out.csv", "missing does not exist; create it first"),
        ("data/test.parquet/out.csv", "data/test.parquet is a file, not a folder"),
    ],
)
def test_predict_output_folder_that_cannot_hold_it(in_trained_copy, where, expected):
    _check_error(invoke("predict", "data/test.parquet", "-o", where), expected)


def test_run_id_that_does_not_exist(in_trained_copy):
    _check_error(invoke("evaluate", "--run-id", "f" * 32), f"--run-id {'f' * 32}: no such run")


def test_run_that_is_not_a_training_run(in_trained_copy, mlflow_uri):
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    experiment = scratch_experiment(client)
    other = client.create_run(experiment).info.run_id
    client.set_terminated(other)
    _check_error(invoke("evaluate", "--run-id", other), "not a training run")


def test_run_whose_model_artifacts_were_deleted(in_trained_copy, mlflow_uri):
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    experiment = scratch_experiment(client)
    run = client.create_run(experiment, tags={"matching.kind": "train"}).info.run_id
    client.set_terminated(run)
    _check_error(
        invoke("predict", "data/test.parquet", "-o", "out.csv", "--run-id", run),
        "model artifacts are missing",
    )
    assert not Path("out.csv").exists()
