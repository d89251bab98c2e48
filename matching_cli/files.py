"""Files on disk: a cheap fingerprint of one, and writing results so that a crash never leaves a
half-written file or folder where it should be."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from matching_cli.errors import MatchingError


def check_writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MatchingError(f"{what} {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise MatchingError(f"{what} {path}: folder {parent} is not writable")


def fingerprint_file(path: Path) -> str:
    """Size plus the last 64 KiB (for parquet, the footer: schema and row-group statistics): cheap,
    and content-sensitive."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        digest.update(f.read())
    return digest.hexdigest()[:16]


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only when the block succeeds."""
    parent = path.parent if str(path.parent) else Path(".")
    _remove_leftovers(parent, f".{path.name}.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".partial", dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh staging folder beside `path`; on success it takes the place of `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path.parent, f".{path.name}.", restore=path)
    staging = _temp_dir(path, "partial")
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if path.exists():
        backup = _temp_dir(path, "old")
        backup.rmdir()
        os.replace(path, backup)
    try:
        os.replace(staging, path)
    except BaseException:
        if backup is not None:
            os.replace(backup, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _temp_dir(path: Path, kind: str) -> Path:
    # The owner's pid in the name lets a later run tell a dead run's leftovers from a live one's.
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}-{os.getpid()}-", dir=path.parent))


def _remove_leftovers(folder: Path, prefix: str, restore: Path | None = None) -> None:
    """Clear what a killed run left beside its target; put back a folder it had moved aside."""
    for leftover in folder.glob(prefix + "*"):
        match = re.match(re.escape(prefix) + r"(?:(partial|old)-)?(\d+)-", leftover.name)
        if not match or _alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and restore is not None and not restore.exists():
            os.replace(leftover, restore)
        elif leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
