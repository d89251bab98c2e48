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
