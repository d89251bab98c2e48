"""`evaluate --errors N`: the most confident mistakes, shown and logged to the run."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from conftest import invoke

from matching_cli.data.pairs import feature_names
from matching_cli.mistakes import FALSE_MATCH, MISSED_MATCH, PAIR_COLUMNS, worst_mistakes


def test_worst_mistakes_are_the_most_confident_wrong_pairs_in_order():
    target = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    score = np.array([0.9, 0.2, 0.6, 0.1, 0.8, 0.3, 0.99, 0.5])
    false, missed = worst_mistakes(target, score, threshold=0.5, n=2)
    assert false.tolist() == [6, 0]  # 0.99, 0.9; 0.6 is a third, beyond n
    assert missed.tolist() == [3, 5]  # 0.1, 0.3; 0.5 is at the threshold: a match, not missed
    none_false, _ = worst_mistakes(target, score, threshold=1.0, n=5)
    assert len(none_false) == 0


def test_evaluate_errors_shows_and_logs_the_most_confident_mistakes(in_trained, tmp_path):
    _, run_id, _ = in_trained
    n = 3
    result = invoke("evaluate", "--run-id", run_id, "--errors", str(n), "--report-dir", "rep")
    assert result.exit_code == 0, result.stderr

    folder = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation/errors.csv", dst_path=str(tmp_path)
    )
    logged = pd.read_csv(folder)
    assert list(logged.columns) == [*PAIR_COLUMNS, *feature_names()]
    assert logged.equals(pd.read_csv("rep/errors.csv"))
    threshold = mlflow.MlflowClient().get_run(run_id).data.metrics["threshold"]
    false = logged[logged["kind"] == FALSE_MATCH]
    missed = logged[logged["kind"] == MISSED_MATCH]
    assert 0 < len(false) <= n and 0 < len(missed) <= n
    shown = result.stdout.split("The most confident mistakes")[1]  # kinds wrap in 80 columns
    assert shown.count("false") == len(false) and shown.count("missed") == len(missed)
    assert "jaccard" in shown  # a telling feature has a column on screen
    assert (false["target"] == 0).all() and (false["score"] >= threshold).all()
    assert (missed["target"] == 1).all() and (missed["score"] < threshold).all()
    assert false["score"].is_monotonic_decreasing and missed["score"].is_monotonic_increasing

    # The names are the listings' own, and the scores those `predict` gives the same pairs.
    text = pd.read_parquet("data/text_and_bert.parquet", columns=["variantid", "name"])
    name_of = dict(zip(text["variantid"], text["name"], strict=True))
    assert logged["name1"].tolist() == [name_of[v] for v in logged["variantid1"]]
    assert logged["name2"].tolist() == [name_of[v] for v in logged["variantid2"]]
    logged[["variantid1", "variantid2"]].to_csv(tmp_path / "pairs.csv", index=False)
    predicted = invoke("predict", str(tmp_path / "pairs.csv"), "-o", str(tmp_path / "s.csv"))
    assert predicted.exit_code == 0, predicted.stderr
    scores = pd.read_csv(tmp_path / "s.csv")["score"]
    np.testing.assert_allclose(scores, logged["score"], atol=1e-5)
