"""`matching predict --engine spark` and `score_pairs` with a real local Spark (`local[2]`): the same
scores as the default engine, and the same rule for unknown listings."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke


def needs_spark(test):
    """Slow, and skipped where Java or pyspark is absent (CI installs both)."""
    for mark in (
        pytest.mark.slow,
        pytest.mark.spark,
        pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java"),
        pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="no pyspark"),
    ):
        test = mark(test)
    return test


UNKNOWN = 123  # a variantid in no table of the demo data


@pytest.fixture(scope="module")
def spark():
    """One Spark session for the module (starting one takes about 10 s); the CLI uses it too."""
    from matching_cli.scale.spark import session

    started = session("local[2]", "tests")
    yield started
    started.stop()


def _pairs_with_an_unknown_listing(folder) -> pd.DataFrame:
    test = pd.read_parquet(folder / "data/test.parquet")[["variantid1", "variantid2"]]
    assert len(test) > 20
    odd = pd.DataFrame({"variantid1": [UNKNOWN], "variantid2": [test.variantid2.iloc[0]]})
    return pd.concat([test.iloc[:7], odd, test.iloc[7:]], ignore_index=True)


def _predict(*args: str) -> pd.DataFrame:
    result = invoke("predict", *args)
    assert result.exit_code == 0, result.output
    return pd.read_csv(args[2])


@needs_spark
@pytest.mark.parametrize("on_missing", ["zero", "drop"])
@pytest.mark.usefixtures("spark")
def test_spark_engine_writes_what_the_default_engine_writes(in_trained, on_missing):
    folder, run_id, _ = in_trained
    _pairs_with_an_unknown_listing(folder).to_parquet("odd.parquet")
    common = ["--run-id", run_id, "--on-missing", on_missing, "--submission"]
    local = _predict("odd.parquet", "-o", "local.csv", *common)
    spark = _predict("odd.parquet", "-o", "spark.csv", *common, "--engine", "spark")
    assert list(spark.columns) == ["variantid1", "variantid2", "target"]
    assert (folder / "spark.csv").read_text().splitlines()[0] == "variantid1,variantid2,target"
    assert len(spark) == len(local) == len(pd.read_parquet("odd.parquet")) - (on_missing == "drop")
    np.testing.assert_array_equal(
        spark[["variantid1", "variantid2"]], local[["variantid1", "variantid2"]]
    )
    np.testing.assert_allclose(spark.target, local.target, atol=1e-6)
    assert spark.target.std() > 0.05  # real scores, not a constant
    if on_missing == "zero":
        assert spark.target[7] == 0.0 and spark.variantid1[7] == UNKNOWN


@needs_spark
@pytest.mark.usefixtures("spark")
def test_spark_engine_refuses_unknown_listings_by_default(in_trained):
    folder, _, _ = in_trained
    _pairs_with_an_unknown_listing(folder).to_parquet("odd.parquet")
    result = invoke("predict", "odd.parquet", "-o", "refused.csv", "--engine", "spark")
    assert result.exit_code == 1
    assert (
        f"1 of {len(pd.read_parquet('odd.parquet'))} pairs" in result.output
        and f"({UNKNOWN}," in result.output
    )
    assert not (folder / "refused.csv").exists()


@needs_spark
@pytest.mark.usefixtures("spark")
def test_spark_engine_reads_a_pairs_csv_as_the_default_engine_does(in_trained):
    # Quoted names and values (R's write.csv), then a space after each comma.
    folder, run_id, _ = in_trained
    test = pd.read_parquet(folder / "data/test.parquet")[["variantid1", "variantid2"]].head(20)
    local = _predict("data/test.parquet", "-o", "local.csv", "--run-id", run_id)
    for header, row in (
        ('"variantid1","variantid2"', '"{}","{}"'),
        ("variantid1, variantid2", "{}, {}"),
    ):
        lines = [header, *(row.format(a, b) for a, b in test.itertuples(index=False))]
        (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
        spark = _predict("pairs.csv", "-o", "spark.csv", "--run-id", run_id, "--engine", "spark")
        assert spark[["variantid1", "variantid2"]].equals(test.reset_index(drop=True)), header
        np.testing.assert_allclose(spark.score, local.score.head(20), atol=1e-6)


@needs_spark
def test_score_pairs_in_a_notebook(in_trained, spark):
    from matching_cli.errors import DataError
    from matching_cli.scale.spark import read_listings, score_pairs

    folder, run_id, _ = in_trained
    odd = _pairs_with_an_unknown_listing(folder)
    odd.to_parquet("odd.parquet")
    local = _predict("odd.parquet", "-o", "local.csv", "--run-id", run_id, "--on-missing", "drop")
    listings = read_listings(spark, folder / "data")
    pairs = spark.createDataFrame(odd)
    model = f"runs:/{run_id}/model"
    scored = score_pairs(spark, pairs, listings, model, on_missing="drop").toPandas()
    assert list(scored.columns) == ["variantid1", "variantid2", "score"]
    both = local.merge(scored, on=["variantid1", "variantid2"], suffixes=("_local", "_spark"))
    assert len(both) == len(scored) == len(odd) - 1
    np.testing.assert_allclose(both.score_spark, both.score_local, atol=1e-6)
    with pytest.raises(DataError, match=f"1 of {len(odd)} pairs.*\\({UNKNOWN}, "):
        score_pairs(spark, pairs, listings, model)


def test_spark_engine_without_pyspark_says_how_to_install_it(in_trained, monkeypatch):
    from matching_cli.scale import spark

    monkeypatch.setattr(spark, "pyspark_installed", lambda: False)
    folder, _, _ = in_trained
    result = invoke("predict", "data/test.parquet", "-o", "x.csv", "--engine", "spark")
    assert result.exit_code == 1
    assert "pip install 'matching-cli[spark]'" in result.output
    assert not (folder / "x.csv").exists()


def test_spark_master_needs_the_spark_engine(in_trained):
    result = invoke("predict", "data/test.parquet", "-o", "x.csv", "--spark-master", "local[4]")
    assert result.exit_code == 2
    assert "--engine spark" in result.output


def test_the_request_columns_are_read_without_leaving_a_temporary_folder(
    in_trained, tmp_path, monkeypatch
):
    """`mlflow.models.get_model_info` left a folder in the system's temporary folder at each call."""
    import tempfile

    from matching_cli.scale.spark import request_columns

    _, run_id, _ = in_trained
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    columns = request_columns(f"runs:/{run_id}/model")
    assert "name_1" in columns and "name_bert_64_2" in columns
    assert list(tmp_path.iterdir()) == []


@needs_spark
def test_the_spark_engine_refuses_what_the_local_one_does(in_trained, tmp_path):
    """Ids stored as text were scored by Spark and refused by the local engine."""
    pairs = pd.read_parquet("data/test.parquet").head(5).astype({"variantid1": str})
    pairs.to_parquet(tmp_path / "text_ids.parquet")
    for engine in ("local", "spark"):
        result = invoke(
            "predict", str(tmp_path / "text_ids.parquet"), "-o", str(tmp_path / "s.csv"),
            "--engine", engine,
        )  # fmt: skip
        assert result.exit_code == 1, (engine, result.stderr)
        assert "column 'variantid1' should be an integer" in result.stderr, result.stderr
