import tomllib
from pathlib import Path

import pytest

from matching_cli.errors import ConfigError
from matching_cli.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("MLFLOW_TRACKING_URI", "MATCHING_TRAIN__EPOCHS", "MATCHING_MLFLOW__TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_settings_toml_mirrors_the_defaults():
    with (ROOT / "settings.toml").open("rb") as f:
        from_file = tomllib.load(f)
    assert Settings.model_validate(from_file) == Settings()
    # Every key of every section is written down in settings.toml.
    for section, values in Settings().model_dump().items():
        assert set(from_file[section]) == set(values), section


def test_precedence_file_config_env_options(tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text(
        "[train]\nepochs = 3\nlr = 0.1\nseed = 5\nbatch_size = 8\n"
    )
    config = tmp_path / "exp.toml"
    config.write_text("[train]\nepochs = 4\nlr = 0.2\nseed = 6\n")
    monkeypatch.setenv("MATCHING_TRAIN__EPOCHS", "7")
    monkeypatch.setenv("MATCHING_TRAIN__LR", "0.3")
    s = load_settings(config, {"train": {"lr": 0.4, "seed": None}})
    assert s.train.batch_size == 8  # settings.toml
    assert s.train.seed == 6  # --config beats settings.toml; a None option is not given
    assert s.train.epochs == 7  # environment beats the files
    assert s.train.lr == 0.4  # options beat everything
    assert s.data.dir == Path("data")


def test_auto_batch_size_and_learning_rate_depend_on_the_device():
    train = Settings().train
    assert (train.batch_size, train.lr) == ("auto", "auto")
    assert (train.for_device("cpu").batch_size, train.for_device("cpu").lr) == (4096, 3e-3)
    assert (train.for_device("cuda").batch_size, train.for_device("cuda").lr) == (16384, 6e-3)
    given = train.model_copy(update={"batch_size": 512, "lr": 0.5})
    assert (given.for_device("cuda").batch_size, given.for_device("cuda").lr) == (512, 0.5)


def test_auto_batch_size_leaves_small_catalogues_enough_steps():
    train = Settings().train
    # The competition's 800k training pairs keep the device's batch.
    assert train.for_device("cpu", 800_000).batch_size == 4096
    assert train.for_device("cuda", 800_000).batch_size == 16384
    # 2k pairs: 2000 // 32 = 62 -> 32, raised to the floor of 64: 31 steps an epoch.
    small = train.for_device("cpu", 2_000)
    assert small.batch_size == 64 and small.lr == pytest.approx(3e-3 / 8)
    # 20k pairs: 625 -> 512 (39 steps), on either device.
    assert train.for_device("cuda", 20_000).batch_size == 512
    assert "20,000 training pairs" in train.auto_choices("cpu", 20_000)
    # A given batch size keeps an auto learning rate in step with it; given values are kept.
    assert train.model_copy(update={"batch_size": 1024}).for_device("cpu", 100).lr == 0.0015
    assert train.model_copy(update={"batch_size": 8, "lr": 0.1}).auto_choices("cpu", 9) == ""


def test_mlflow_tracking_uri_from_mlflow_variable(monkeypatch):
    assert load_settings().mlflow.tracking_uri == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    assert load_settings().mlflow.tracking_uri == "sqlite:///other.db"
    monkeypatch.setenv("MATCHING_MLFLOW__TRACKING_URI", "sqlite:///ours.db")
    assert load_settings().mlflow.tracking_uri == "sqlite:///ours.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepochz = 3\n", "unknown key train.epochz"),
        ("[trian]\nepochs = 3\n", "unknown section [trian]"),
        ("[train]\nepochs = 'many'\n", "train.epochs"),
        (
            "[train]\nbatch_size = -1\n",
            r"train.batch_size \(from .*bad.toml\): Input should be greater than 0 or",
        ),
        ("[train\n", "not valid TOML"),
        ("[model]\npair_features = 'sum'\n", "model.pair_features"),
        # pydantic read true as 1 epoch, a batch of 1.
        (
            "[train]\nepochs = true\n",
            r"train.epochs \(.*\): true/false given where a value of another",
        ),
        ("[train]\nbatch_size = false\n", r"train.batch_size \(.*\): true/false given"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as caught:
        load_settings(config)
    assert str(config) in str(caught.value)


def test_true_and_false_stay_valid_where_a_setting_takes_them(tmp_path):
    config = tmp_path / "flags.toml"
    config.write_text("[model]\ncross_fit = false\n[match]\nsame_category = true\n")
    settings = load_settings(config)
    assert settings.model.cross_fit is False and settings.match.same_category is True


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_bad_environment_value_is_an_error(monkeypatch):
    monkeypatch.setenv("MATCHING_TRAIN__EPOCHS", "0")
    with pytest.raises(ConfigError, match=r"train\.epochs \(from MATCHING_TRAIN__EPOCHS\)"):
        load_settings()


def test_a_bad_value_names_the_source_that_gave_it(tmp_path, monkeypatch):
    """It said "(from FILE, MATCHING_* variables or options)" whichever of them held the value."""
    config = tmp_path / "mine.toml"
    config.write_text("[train]\nepochs = -3\nlr = 0.01\n")
    with pytest.raises(ConfigError, match=rf"train\.epochs \(from {config}\): Input should be"):
        load_settings(config)
    with pytest.raises(ConfigError, match=r"train\.epochs \(from the command's option\)"):
        load_settings(config, overrides={"train": {"epochs": 0}})
    monkeypatch.setenv("MATCHING_TRAIN__LR", "-1")  # beats the file's 0.01
    with pytest.raises(ConfigError, match=r"train\.lr \(from MATCHING_TRAIN__LR\)"):
        load_settings(config, overrides={"train": {"epochs": 3}})
