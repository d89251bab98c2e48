"""Typed choices: refused at parse time (exit 2, the choices listed), before any store or data is
touched; settings refuse them too; a saved model is checked block by block, name and width."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from matching_cli.data.tables import Block
from matching_cli.errors import ConfigError, ModelError
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.saved import SavedModel, check_blocks, load_model, save_model
from matching_cli.settings import Settings, load_settings
from tests.conftest import invoke


@pytest.fixture
def empty_project(tmp_path, monkeypatch) -> Path:
    """A folder with no data and an MLflow store that does not exist yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MATCHING_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def _usage_error(result, *expected: str) -> None:
    assert result.exit_code == 2, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    for part in expected:
        assert part in text, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, choices",
    [
        (
            ["predict", "p.parquet", "-o", "x.csv", "--on-missing", "bogus"],
            "'error', 'zero', 'drop'",
        ),
        (["match", "--method", "fast"], "'auto', 'exact', 'ivf', 'hnsw'"),
        (["train", "--pair-features", "sum"], "'symmetric', 'concat'"),
        (["download", "--source", "ftp"], "'yandex', 'dvc'"),
    ],
)
def test_a_value_outside_the_choices_is_a_usage_error_before_any_work(empty_project, args, choices):
    _usage_error(invoke(*args), f"is not one of {choices}")
    # Nothing was opened or written: no MLflow store, no data, no output.
    assert sorted(p.name for p in empty_project.iterdir()) == []


def test_help_lists_the_choices(empty_project):
    assert "error|zero|drop" in invoke("predict", "--help").stdout
    assert "auto|exact|ivf|hnsw" in invoke("match", "--help").stdout
    assert "symmetric|concat" in invoke("train", "--help").stdout


def test_synthetic_data_from_dvc_is_refused(empty_project):
    _usage_error(invoke("download", "--synthetic", "--source", "dvc"), "--synthetic")
    assert not (empty_project / "data").exists()


@pytest.mark.parametrize("device", ["gpu", "cpu:1", "cuda:x", "mps0"])
def test_device_names_are_checked_when_settings_load(device):
    with pytest.raises(ConfigError, match=f"train.device.*'{device}' is not a device"):
        load_settings(overrides={"train": {"device": device}}, base_file=Path("absent.toml"))
    assert load_settings(overrides={"train": {"device": "cuda:1"}}).train.device == "cuda:1"


def test_match_settings_come_from_the_file_and_options_override_them(tmp_path):
    config = tmp_path / "more.toml"
    config.write_text("[match]\nk = 3\nmethod = 'hnsw'\nmax_group = 0\n")
    match = load_settings(config, base_file=Path("absent.toml")).match
    assert (match.k, match.method, match.max_group, match.join_threshold) == (3, "hnsw", 0, 0.99)
    assert load_settings(config, {"match": {"k": 7}}, Path("absent.toml")).match.k == 7
    config.write_text("[match]\nmethod = 'fast'\n")
    with pytest.raises(ConfigError, match=r"match\.method"):
        load_settings(config, base_file=Path("absent.toml"))


def _saved(dims: tuple[int, ...]) -> SavedModel:
    blocks, offset = [], 0
    for i, dim in enumerate(dims):
        blocks.append(Block(f"block{i}", "text_and_bert.parquet", dim, offset))
        offset += dim
    model = PairClassifier(ModelConfig(block_dims=dims, hidden_size=8))
    return SavedModel(model, 0.5, blocks, Settings(), "abc")


def test_a_model_is_refused_for_blocks_of_another_width(tmp_path):
    save_model(tmp_path, _saved((8, 16)))
    loaded = load_model(tmp_path)
    assert [(b.name, b.dim) for b in loaded.blocks] == [("block0", 8), ("block1", 16)]
    check_blocks(loaded.blocks, _saved((8, 16)).blocks)  # the same blocks pass
    with pytest.raises(ModelError, match=r"expects embedding blocks block0 \(8\), block1 \(16\)"):
        check_blocks(loaded.blocks, _saved((8, 32)).blocks)  # same names, another width


def test_a_model_json_from_before_the_match_section_still_loads(tmp_path):
    save_model(tmp_path, _saved((8, 16)))
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["settings"]["match"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    loaded = load_model(tmp_path)
    assert loaded.settings.model.pair_features == "symmetric"
    assert loaded.classifier.config == ModelConfig(block_dims=(8, 16), hidden_size=8)
    a = torch.zeros(2, 24)
    assert loaded.classifier(a, a).shape == (2,)
