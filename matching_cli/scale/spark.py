"""Scoring pairs on Apache Spark with a training run's served MLflow model.

For a notebook (Databricks, or any `SparkSession`)::

    from matching_cli.scale.spark import read_listings, score_pairs

    listings = read_listings(spark, "/data/ozon")          # or any DataFrame: variantid + fields
    pairs = spark.read.parquet("/data/ozon/test.parquet")  # variantid1, variantid2
    scored = score_pairs(spark, pairs, listings, "models:/pair-matcher@champion", on_missing="zero")
    scored.write.parquet("/data/ozon/scores")

The scoring code is the served model's (`mlflow.pyfunc.spark_udf` over `serving.RawPairScorer`):
Spark joins each pair with its two listings' raw fields and the executors score them in Arrow
batches, so a pair gets the score `matching predict` gives it. `matching predict --engine spark`
is this function plus reading the data folder and writing the CSV on the driver.

pyspark is an optional dependency (`pip install 'matching-cli[spark]'`); this module imports it,
so import the module only when Spark is wanted.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from functools import reduce
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow

from matching_cli.choices import OnMissing
from matching_cli.data.layout import ATTRIBUTES_FILE, IMAGE_FILES, TEXT_FILE
from matching_cli.data.readers import is_csv
from matching_cli.errors import DataError, MatchingError
from matching_cli.files import resolve_output
from matching_cli.predict import PredictSummary, missing_error, scores_file
from matching_cli.serving import SIDES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

KNOWN = "_known"  # set on a joined pair when both of its listings were found
INSTALL = "pip install 'matching-cli[spark]'"


def pyspark_installed() -> bool:
    return importlib.util.find_spec("pyspark") is not None


def session(master: str = "local[2]", app_name: str = "matching") -> SparkSession:
    """A Spark session whose Python workers run this interpreter (with this package and torch),
    not whatever `python3` is first on the PATH."""
    if not pyspark_installed():
        raise MatchingError(f"--engine spark needs pyspark, which is not installed: {INSTALL}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    local = master.startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no warning about the hostname
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if local:  # Spark's 200 shuffle partitions are 200 tasks, each with its start-up costs
        builder = builder.config("spark.sql.shuffle.partitions", _cores(master))
    try:
        spark = builder.getOrCreate()
    except PySparkException as e:
        raise MatchingError(
            f"Spark did not start at {master} ({str(e).strip().splitlines()[0]}); "
            "it needs Java 17 or later on the PATH or in JAVA_HOME"
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _cores(master: str) -> str:
    inside = master.partition("[")[2].partition("]")[0].partition(",")[0]
    return inside if inside.isdigit() else str(os.cpu_count() or 2)


def read_listings(spark: SparkSession, data_dir: str | Path) -> DataFrame:
    """One row per listing of a data folder in the competition's layout: `text_and_bert.parquet`
    and the image table (`resnet.parquet` or `images_embed.parquet`), joined on `variantid` (a
    listing in either is known, as to `matching predict`), with `attributes.parquet`'s columns where
    it exists. A file or column that is not there is simply absent."""
    data_dir = Path(data_dir)
    images = [data_dir / name for name in IMAGE_FILES if (data_dir / name).is_file()][:1]
    item_tables = [p for p in [data_dir / TEXT_FILE, *images] if p.is_file()]
    if not item_tables:
        raise DataError(
            f"{data_dir}: neither {TEXT_FILE} nor an image table ({' or '.join(IMAGE_FILES)})"
        )
    tables = [spark.read.parquet(str(p.resolve())) for p in item_tables]
    attributes = data_dir / ATTRIBUTES_FILE
    if attributes.is_file():
        tables.append(spark.read.parquet(str(attributes.resolve())))
    seen = {"variantid"}
    for i, table in enumerate(tables):  # a column two files share is taken from the first
        tables[i] = table.select("variantid", *[c for c in table.columns if c not in seen])
        seen.update(table.columns)
    listings = reduce(lambda a, b: a.join(b, "variantid", "full_outer"), tables[: len(item_tables)])
    if attributes.is_file():
        listings = listings.join(tables[-1], "variantid", "left")
    return listings


def request_columns(model_uri: str) -> list[str]:
    """The request's columns the logged model names (`name_bert_64_1`, ..., `name_bert_64_2`, ...).
    Its MLmodel file is read from a folder removed after (`mlflow.models.get_model_info` leaves one
    in the system's temporary folder at each call)."""
    with tempfile.TemporaryDirectory(prefix="matching-mlmodel-") as staging:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri.rstrip('/')}/MLmodel", dst_path=staging
        )
        signature = mlflow.models.Model.load(path).signature
    if signature is None:
        raise DataError(
            f"{model_uri}: the model was logged without its request columns; train again"
        )
    return list(signature.inputs.input_names())


def joined_pairs(pairs: DataFrame, listings: DataFrame, columns: list[str]) -> DataFrame:
    """`pairs` with each listing's fields under the request's names, and `_known`: both listings
    were found. Fields the listings lack are left out (the scorer treats them as missing)."""
    from pyspark.sql import functions as F

    joined = pairs
    for side in SIDES:
        key = f"variantid{side[1:]}"
        fields = [
            c for c in columns if c.endswith(side) and c.removesuffix(side) in listings.columns
        ]
        one = listings.select(
            F.col("variantid").alias(key),
            F.lit(True).alias(f"{KNOWN}{side}"),
            *[F.col(c.removesuffix(side)).alias(c) for c in fields],
        )
        joined = joined.join(one, key, "left")
    known = F.col(f"{KNOWN}_1").isNotNull() & F.col(f"{KNOWN}_2").isNotNull()
    return joined.withColumn(KNOWN, known).drop(f"{KNOWN}_1", f"{KNOWN}_2")


def unknown_pairs(joined: DataFrame) -> tuple[int, list[tuple[int, int]]]:
    """How many joined pairs name a listing that is not there, and up to three of them."""
    unknown = joined.filter(~joined[KNOWN]).select("variantid1", "variantid2")
    count = unknown.count()
    return count, [(r[0], r[1]) for r in unknown.limit(3).collect()] if count else []


def score_pairs(
    spark: SparkSession,
    pairs: DataFrame,
    listings: DataFrame,
    model_uri: str,
    on_missing: OnMissing | str = OnMissing.error,
) -> DataFrame:
    """Score every pair (`variantid1`, `variantid2`) with the logged model at `model_uri`
    (`runs:/<run id>/model` or `models:/NAME@ALIAS`).

    `listings` has a `variantid` column and the listings' raw fields as in the competition's files
    (see `read_listings`). Returns the pairs' own columns plus `score` (float32 probability), lazily:
    nothing is scored until the result is written or collected. A pair whose listing is not in
    `listings` follows `on_missing` as in `matching predict`: `error` raises a DataError (counting
    them now), `zero` scores it 0.0, `drop` leaves it out.
    """
    from pyspark.sql import functions as F

    on_missing = OnMissing(on_missing)
    columns = request_columns(model_uri)
    joined = joined_pairs(pairs, listings, columns)
    if on_missing == OnMissing.error:
        count, examples = unknown_pairs(joined)
        if count:
            raise missing_error(
                "the pairs", count, pairs.count(), examples, "on_missing='zero' or 'drop'"
            )
    if on_missing == OnMissing.drop:
        joined = joined.filter(F.col(KNOWN))
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="float", env_manager="local")
    present = [c for c in columns if c in joined.columns]
    # A pair with an unknown listing is scored too (its fields are null), then set to 0.
    score = F.when(F.col(KNOWN), udf(F.struct(*present))).otherwise(F.lit(0.0).cast("float"))
    return joined.select(*pairs.columns, score.alias("score"))


def spark_predict(
    master: str,
    data_dir: Path,
    model_uri: str,
    pairs_path: Path,
    out_path: Path,
    *,
    submission: bool = False,
    on_missing: OnMissing = OnMissing.error,
) -> PredictSummary:
    """`predict_file_spark` in a session of its own, stopped at the end; in a process that has a
    session already (a notebook, the tests), in that one, left running."""
    active = pyspark_installed() and _active_session() is not None
    spark = session(master, "matching predict")
    try:
        return predict_file_spark(
            spark,
            data_dir,
            model_uri,
            pairs_path,
            out_path,
            submission=submission,
            on_missing=on_missing,
        )
    finally:
        if not active:
            spark.stop()


def _active_session() -> SparkSession | None:
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


ROW = "_row"  # the pairs file's order, kept through the joins


def predict_file_spark(
    spark: SparkSession,
    data_dir: Path,
    model_uri: str,
    pairs_path: Path,
    out_path: Path,
    *,
    submission: bool = False,
    on_missing: OnMissing = OnMissing.error,
    chunk_rows: int = 100_000,
) -> PredictSummary:
    """`matching predict --engine spark`: what `predict.predict_file` writes, in the pairs file's
    order, atomically; Spark joins and scores, the driver streams the result into the CSV."""
    from pyspark.sql import functions as F

    if str(out_path) != "-":
        resolve_output(out_path, "--output")  # refuse a folder or a loop before any work
    pairs = _read_pairs(spark, pairs_path).withColumn(ROW, F.monotonically_increasing_id())
    listings = read_listings(spark, data_dir)
    total, nulls = pairs.agg(
        F.count("*"), F.count_if(F.col("variantid1").isNull() | F.col("variantid2").isNull())
    ).first()
    if nulls:  # null in the file, or a CSV value that is not an integer
        raise DataError(f"{pairs_path}: {nulls} pairs have a null or non-integer variantid")
    missing, examples = unknown_pairs(joined_pairs(pairs, listings, request_columns(model_uri)))
    if missing and on_missing == OnMissing.error:
        raise missing_error(str(pairs_path), missing, total, examples)
    # No unknown listing is left to refuse: "zero" scores the same without counting them again.
    rule = OnMissing.zero if on_missing == OnMissing.error else on_missing
    # Cached: the sort below first samples its input, which would otherwise score every pair twice.
    scored = score_pairs(spark, pairs, listings, model_uri, rule).persist()
    written = 0
    try:
        rows = scored.orderBy(ROW).select("variantid1", "variantid2", "score").toLocalIterator()
        with scores_file(out_path, submission) as write:
            for chunk in iter(lambda: list(islice(rows, chunk_rows)), []):
                write(*([row[i] for row in chunk] for i in range(3)))
                written += len(chunk)
    finally:
        scored.unpersist()
    return PredictSummary(total, written, missing)


def _read_pairs(spark: SparkSession, path: Path) -> DataFrame:
    """variantid1, variantid2 (int64) of a parquet file, or of a CSV named `*.csv`."""
    from pyspark.sql import functions as F

    if is_csv(path):
        # As the default engine reads them: quoted names, a space after each comma.
        pairs = spark.read.csv(
            str(path.resolve()),
            header=True,
            ignoreLeadingWhiteSpace=True,
            ignoreTrailingWhiteSpace=True,
        )
    else:
        pairs = spark.read.parquet(str(path.resolve()))
    absent = [c for c in ("variantid1", "variantid2") if c not in pairs.columns]
    if absent:
        raise DataError(
            f"{path}: no {', '.join(absent)} column (found: {', '.join(pairs.columns)[:200]})"
        )
    return pairs.select(*[F.col(c).cast("long").alias(c) for c in ("variantid1", "variantid2")])
