"""The repository's promises to a new user: README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start$(.*?)^## ", text, re.M | re.S).group(1)
    return [
        line
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.strip()
    ]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert "matching download --synthetic" in commands[0] and "matching train" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci/run").read_text().splitlines()


def test_dvc_pipeline_depends_on_files_that_exist():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    code = [dep for stage in stages.values() for dep in stage["deps"] if "matching_cli" in dep]
    assert code and all((ROOT / dep).exists() for dep in code), code


def test_outputs_are_ignored_and_dvc_lock_and_the_reports_are_not():
    """The reports are DVC metrics and plots that git keeps (`cache: false`): ignored, `dvc
    metrics diff` had nothing to compare and a teammate's clone no metrics."""
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {"/matches/", "/mlruns/", "/models", "/prepared"} <= set(ignored)
    rules = [line for line in ignored if not line.startswith("#")]
    assert not any("dvc.lock" in line or "reports" in line for line in rules)
