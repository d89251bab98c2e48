"""One merge rule for trained and today's settings; tracking configured by each job from its settings."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from matching_cli import tracking
from matching_cli.loading import trained_settings
from matching_cli.match.job import MatchOptions, match_job
from matching_cli.settings import MatchSettings, MlflowSettings, Settings


def test_trained_settings_shape_the_result_todays_say_where():
    trained = Settings.model_validate(
        {
            "data": {"dir": "old-data", "prepared_dir": "old-prepared", "split_seed": 7},
            "model": {"hidden_size": 32, "pair_features": "concat"},
            "train": {"epochs": 3, "device": "cuda", "models_dir": "old-models", "lr": 0.01},
            "mlflow": {"experiment": "old"},
        }
    )
    today = Settings.model_validate(
        {
            "data": {"dir": "new-data", "split_seed": 1},
            "model": {"hidden_size": 64},
            "train": {"epochs": 9, "device": "cpu", "models_dir": "new-models"},
            "mlflow": {"experiment": "new"},
        }
    )
    merged = trained_settings(trained, today)
    assert (merged.data.dir, merged.data.prepared_dir) == (Path("new-data"), Path("prepared"))
    assert (merged.train.device, merged.train.models_dir) == ("cpu", Path("new-models"))
    assert merged.mlflow.experiment == "new" and merged.download == today.download
    assert merged.data.split_seed == 7 and merged.train.epochs == 3 and merged.train.lr == 0.01
    assert merged.model.hidden_size == 32 and merged.model.pair_features == "concat"


def test_configure_reads_no_logger_level_of_the_cli(tmp_path):
    mlflow_logger = logging.getLogger("mlflow")
    before = mlflow_logger.level
    cli_logger = logging.getLogger("matching_cli")
    level = cli_logger.level
    try:
        cli_logger.setLevel(logging.DEBUG)
        mlflow_logger.setLevel(logging.WARNING)
        tracking.configure(MlflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"))
        assert mlflow_logger.level == logging.WARNING
    finally:
        cli_logger.setLevel(level)
        mlflow_logger.setLevel(before)


def test_match_job_configures_its_own_tracking(in_trained, tmp_path, mlflow_uri):
    run_id = in_trained[1]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # state left by someone else
    settings = Settings(
        mlflow=MlflowSettings(tracking_uri=mlflow_uri, experiment="trained"),
        match=MatchSettings(output=tmp_path / "out", k=3),
    )
    result = match_job(settings, MatchOptions(run_id=run_id))
    assert mlflow.MlflowClient(mlflow_uri).get_run(result.run_id).info.status == "FINISHED"
