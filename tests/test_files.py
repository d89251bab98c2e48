"""Writing outputs whole: what `files.atomic_dir` leaves when it is interrupted, and how the
leftovers of runs that were killed are cleared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from matching_cli import files
from matching_cli.files import atomic_dir, remove_leftovers


def _dead_pid() -> int:
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(process.stdout)


def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "file").write_text(text)
    return path


def test_ctrl_c_while_the_old_folder_is_removed_leaves_no_copy_of_it(tmp_path, monkeypatch):
    _folder(tmp_path / "store", "old")
    real_rmtree = shutil.rmtree
    calls = []

    def interrupted_once(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            (Path(path) / "file").unlink()  # half-way through
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "store") as staging:
        (staging / "file").write_text("new")
        monkeypatch.setattr(files.shutil, "rmtree", interrupted_once)
    # The new folder is in place, and the old one's hidden copy (a whole store at the real size)
    # is gone: it was left for nobody to remove.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert (tmp_path / "store" / "file").read_text() == "new"


def test_leftovers_of_dead_runs_are_cleared_and_a_moved_aside_folder_put_back(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    _folder(tmp_path / "a", "a")
    _folder(tmp_path / f".a.old-{dead}-x1", "old a")  # its replacement is in place: removed
    _folder(tmp_path / f".b.old-{dead}-x2", "old b")  # moved aside, never replaced: put back
    _folder(tmp_path / f".c.partial-{dead}-x3", "half")
    (tmp_path / f".scores.csv.{dead}-x4.partial").write_text("half")
    _folder(tmp_path / f".d.partial-{alive}-x5", "being written")  # a live run's: kept
    _folder(tmp_path / ".e", "not ours")

    remove_leftovers(tmp_path)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".d.partial-{alive}-x5", ".e", "a", "b"]
    assert (tmp_path / "a" / "file").read_text() == "a"
    assert (tmp_path / "b" / "file").read_text() == "old b"


def test_leftovers_of_one_target_leave_the_others(tmp_path):
    dead = _dead_pid()
    _folder(tmp_path / f".a.partial-{dead}-x1", "half")
    _folder(tmp_path / f".ab.partial-{dead}-x2", "half")
    remove_leftovers(tmp_path, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".ab.partial-{dead}-x2"]


def test_a_saved_model_is_readable_like_every_other_output(in_trained):
    """safetensors' save_file wrote the weights owner-only (0600) beside a model.json of 0644: a
    teammate could not load the model from a shared folder or MLflow store."""
    _, run_id, _ = in_trained
    folder = Path("models") / run_id
    usual = (folder / "model.json").stat().st_mode & 0o777
    for path in [folder / "weights.safetensors", *folder.glob("checkpoint/*.safetensors")]:
        assert path.stat().st_mode & 0o777 == usual, path
    assert usual == 0o666 & ~_umask()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
