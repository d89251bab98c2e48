"""What a new user reads and sees: messages that say what happened, logs when output is piped,
tables that explain themselves, help that describes every option, CSV files without quotes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import typer.main

from matching_cli.cli import app
from matching_cli.data.synthetic import generate
from tests.conftest import DEMO_PAIRS, FAST, invoke


def words(text: str) -> str:
    """Help and messages as one line: rich and click wrap them at the console's width."""
    return " ".join(text.split())


def log_lines(stderr: str) -> list[str]:
    """The log records, without their time stamps (CliRunner's stderr is not a terminal)."""
    return [m.group(1) for m in re.finditer(r"^\d\d:\d\d:\d\d INFO (.*)$", stderr, re.M)]


# --- 4: a pairs file that is not there -----------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["predict", "nope.parquet", "-o", "x.csv"], ["evaluate", "--pairs", "nope.parquet"]]
)
def test_missing_pairs_file_is_named_without_pointing_at_download(project, command):
    result = invoke(*command)
    assert result.exit_code == 1
    message = words(result.stderr)
    assert "nope.parquet: not found; give the path of a parquet file of" in message
    assert "matching download" not in message
    assert not Path("x.csv").exists()


# --- 5 and 7: logs when stderr is not a terminal -------------------------------------------------


def test_a_new_process_shows_our_log_lines_and_not_mlflows(project, tmp_path):
    """MLflow sets its own loggers' level when first imported, which a command does after the CLI
    set up logging: in a new process its INFO lines ("Creating initial MLflow database tables",
    "Validating input example") came between ours."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env["MATCHING_MLFLOW__TRACKING_URI"] = f"sqlite:///{tmp_path / 'fresh.db'}"
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    command = [sys.executable, "-m", "matching_cli", "train", "--head", "trees"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Model saved in" in result.stderr
    assert not re.search(r"INFO mlflow\.", result.stderr), result.stderr


def test_piped_train_logs_every_stage_and_no_batches_after_the_last_epoch(project):
    result = invoke("train", *FAST)
    assert result.exit_code == 0, result.stderr
    lines = log_lines(result.stderr)
    batches = -(-int(re.search(r"Training on cpu: ([\d,]+) train", result.stderr).group(1)) // 256)
    assert "preparing the data: started" in lines
    assert any(
        re.fullmatch(r"preparing the data: done \(1,200 pairs\) in [\d.]+ s", x) for x in lines
    )
    starts = [i for i, x in enumerate(lines) if re.fullmatch(r"epoch \d/3 batches: started .*", x)]
    assert [lines[i] for i in starts] == [
        f"epoch {e}/3 batches: started ({batches} batches)" for e in (1, 2, 3)
    ]
    for epoch, i in zip((1, 2, 3), starts, strict=True):
        assert lines[i + 1].startswith(f"epoch {epoch}/3  train_loss")  # the loop's own line
        assert re.fullmatch(
            rf"epoch {epoch}/3 batches: done \({batches} batches\) in [\d.]+ s", lines[i + 2]
        )
    # After the last epoch: no fourth batch task; the job says it is testing and saving.
    after = lines[starts[-1] :]
    assert not any(x.startswith("epoch 4/") for x in lines)
    testing = [x for x in after if x.startswith("testing and saving the model:")]
    assert testing[0] == "testing and saving the model: started"
    assert re.fullmatch(r"testing and saving the model: done in [\d.]+ s", testing[1])
    assert any(re.fullmatch(r"epochs: done \(3 epochs\) in [\d.]+ s", x) for x in after)


def test_piped_match_and_predict_log_start_and_end_with_counts(in_trained):
    result = invoke("match", "-o", "m")
    assert result.exit_code == 0, result.stderr
    lines = log_lines(result.stderr)
    for stage in ("loading", "blocking", "scoring", "clustering", "writing", "quality"):
        assert f"{stage}: started" in " ".join(lines), stage
        assert any(re.match(rf"{stage}: done .*in [\d.]+ s$", x) for x in lines), stage
    assert any(
        re.fullmatch(r"exact search: done \([\d,]+ listings\) in [\d.]+ s", x) for x in lines
    )
    assert any(
        re.fullmatch(r"scoring candidates: done \([\d,]+ pairs\) in [\d.]+ s", x) for x in lines
    )
    assert any(
        re.fullmatch(r"clustering: done \([\d,]+ accepted pairs\) in [\d.]+ s", x) for x in lines
    )

    result = invoke("predict", "data/test.parquet", "-o", "s.csv")
    assert result.exit_code == 0, result.stderr
    lines = log_lines(result.stderr)
    rows = len(Path("s.csv").read_text().splitlines()) - 1
    assert "scoring pairs: started" in " ".join(lines)
    assert any(
        re.fullmatch(rf"scoring pairs: done \({rows:,} pairs\) in [\d.]+ s", x) for x in lines
    )


def test_a_long_task_logs_a_line_between_start_and_end(caplog):
    from matching_cli.progress import LoggingReporter

    caplog.set_level("INFO", logger="matching_cli")
    task = LoggingReporter(every_s=0).task("scoring", total=4, unit="pairs")
    task.advance(2)
    task.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "scoring: started (4 pairs)"
    assert messages[1].startswith("scoring: 2 pairs of 4 pairs, ")
    assert re.fullmatch(r"scoring: done \(2 pairs of 4 pairs\) in [\d.]+ s", messages[2])


# --- 6: tables -----------------------------------------------------------------------------------


def test_training_table_and_json_show_the_threshold_and_the_best_epoch(project):
    result = invoke("train", *FAST)
    assert result.exit_code == 0, result.stderr
    out = words(result.stdout)
    assert re.search(r"threshold \(best F1, chosen in training\) │ 0\.\d{4}", out), result.stdout
    assert re.search(r"best epoch \(weights kept\) │ [123] of 3", out), result.stdout

    result = invoke("train", *FAST, "--json")
    shown = json.loads(result.stdout)
    assert 0 < shown["threshold"] < 1 and shown["best_epoch"] in (1, 2, 3) and shown["epochs"] == 3


def test_predict_and_match_name_the_model_run_and_fit_80_columns(in_trained):
    _, run_id, _ = in_trained
    result = invoke("predict", "data/test.parquet", "-o", "scores.csv")
    assert f"with the model of training run {run_id}." in words(result.stdout)

    deep = Path("results") / ("a-rather-long-folder-name-" * 3) / "matches"
    result = invoke("match", "-o", str(deep))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\s*Matches in …/.*matches\s*", lines[0]), lines[0]  # one line: shortened
    assert lines[1].lstrip().startswith("┏")
    assert re.search(r"┃ measure\s+┃\s+value ┃", result.stdout)
    assert f"Model of training run {run_id}; this match is MLflow run" in words(result.stdout)
    assert all(len(line) <= 80 for line in lines)


# --- 8: --help -----------------------------------------------------------------------------------


def test_every_option_says_what_it_does_and_settings_keys_show_their_default():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            help_text = getattr(param, "help", None) or ""
            assert help_text and not help_text.startswith("["), (name, param.name)
            for key in re.findall(r"\[([a-z]+\.[a-z_]+)[,\]]", help_text):
                assert f"[{key}, default " in help_text, (name, param.name)
    shown = words(invoke("train", "--help").stdout)
    # The value's name (<int>, INTEGER) is typer's, and differs between its versions.
    assert re.search(
        r"--epochs \S+ Training epochs \(fewer with early stopping\) \[train\.epochs, default 20\]\.",
        shown,
    ), shown
    assert re.search(
        r"--seed \S+ Random seed of weights, batches and dropout \[train\.seed, default 42\]\.",
        shown,
    ), shown


def test_command_summaries_are_whole_and_predict_usage_names_pairs():
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "matching_cli", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    commands = result.stdout.split("Commands:")[1].strip().splitlines()
    assert len(commands) == 7  # download prepare train evaluate predict match promote
    for line in commands:
        assert line.rstrip().endswith(".") and "…" not in line and "..." not in line, line
    assert invoke("predict", "--help").stdout.startswith(
        "Usage: matching predict [OPTIONS] PAIRS\n"
    )


# --- 10: CSV headers -----------------------------------------------------------------------------


def test_csv_headers_have_no_quotes(in_trained):
    assert invoke("predict", "data/test.parquet", "-o", "sub.csv", "--submission").exit_code == 0
    assert Path("sub.csv").read_text().splitlines()[0] == "variantid1,variantid2,target"
    assert invoke("predict", "data/test.parquet", "-o", "s.csv").exit_code == 0
    assert Path("s.csv").read_text().splitlines()[0] == "variantid1,variantid2,score"


# --- 2 and 3: download and DVC messages ----------------------------------------------------------


def test_download_over_the_demo_data_says_so_and_how_to_get_the_real_files(project):
    result = invoke("download")  # the public link is never asked: the data is there
    assert result.exit_code == 0
    assert words(result.stdout) == (
        "data holds the demo data set (from `matching download --synthetic`); nothing was "
        "downloaded. `matching download --force` replaces it with the competition files."
    )
    result = invoke("download", "--synthetic", "--pairs", str(DEMO_PAIRS), "--seed", "3")
    assert result.exit_code == 0, result.stderr
    assert "data already holds the demo data set; nothing was written." in words(result.stdout)


@pytest.mark.parametrize(
    "asked",
    [["--pairs", "500", "--seed", "3"], ["--pairs", str(DEMO_PAIRS), "--seed", "4"], []],
)
def test_download_over_another_demo_data_set_is_refused(project, asked):
    """It kept the old set and exited 0: `download --synthetic --pairs N && train` trained on it."""
    before = {p.name: p.read_bytes() for p in Path("data").iterdir()}
    result = invoke("download", "--synthetic", *asked)
    assert result.exit_code == 1, result.stdout
    text = words(result.stderr)
    assert f"data holds another demo data set ({DEMO_PAIRS:,} pairs, seed 3)" in text
    assert "nothing was written: add --force to replace it" in text
    assert {p.name: p.read_bytes() for p in Path("data").iterdir()} == before


def _git_dvc_repo(root: Path) -> Path:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env)
    return root


def test_dvc_messages_say_what_happened_and_the_step_that_works(tmp_path, monkeypatch):
    monkeypatch.chdir(_git_dvc_repo(tmp_path))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    result = invoke("download", "--synthetic", "--pairs", "200")
    assert result.exit_code == 0, result.stderr
    assert words(result.stdout).endswith(
        "Tracked data with DVC: commit data.dvc (`git add data.dvc && git commit`). No DVC "
        "remote is configured: to share the files, `dvc remote add -d NAME URL`, then `dvc push`."
    )
    # The same demo data again: data.dvc does not change, so there is nothing to commit.
    result = invoke("download", "--synthetic", "--pairs", "200", "--force")
    assert words(result.stdout).endswith(
        "data.dvc already described these files: nothing to commit."
    )
    # No remote: the files come back from the local cache, and the message says so.
    result = invoke("download", "--source", "dvc")
    assert result.exit_code == 0, result.stderr
    assert words(result.stdout) == "Restored data from the local DVC cache (.dvc/cache)."


def test_generated_data_is_the_same_for_the_same_seed(tmp_path):
    """What "nothing to commit" above rests on: the demo files are byte for byte reproducible."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        generate(tmp_path / name, 100, seed=1)
    for file in (tmp_path / "a").iterdir():
        assert file.read_bytes() == (tmp_path / "b" / file.name).read_bytes(), file.name


def test_scoring_commands_do_not_import_matplotlib():
    # matplotlib was imported by every command that reached the jobs module: 0.4 s of predict.
    code = (
        "import sys, matching_cli.jobs, matching_cli.match.job, matching_cli.predict; "
        "print('matplotlib' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"


# The parquet files name the pyarrow that wrote them, so data.dvc describes one version's bytes:
# the one a fresh install got when data.dvc was last written (as CI installs it).
DATA_DVC_PYARROW = "26.0.1"


@pytest.mark.skipif(
    pa.__version__ != DATA_DVC_PYARROW, reason=f"data.dvc holds pyarrow {DATA_DVC_PYARROW}'s files"
)
def test_the_repositorys_data_dvc_describes_the_default_demo_data(tmp_path, monkeypatch):
    """README's quick start: in a clone, `matching download --synthetic` finds that data.dvc
    already describes what it wrote. A change to what the demo data holds must come with a new
    data.dvc (24c5659 changed truth.parquet and left data.dvc behind, so a clone's first download
    asked for a commit)."""
    monkeypatch.chdir(_git_dvc_repo(tmp_path))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    shutil.copy(Path(__file__).parents[1] / "data.dvc", "data.dvc")
    result = invoke("download", "--synthetic")  # the defaults: 50,000 pairs
    assert result.exit_code == 0, result.stderr
    assert words(result.stdout).endswith(
        "data.dvc already described these files: nothing to commit."
    )
