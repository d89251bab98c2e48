"""Files on disk: a cheap fingerprint of one, and writing results so that a crash never leaves a
half-written file or folder where it should be."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from matching_cli.errors import MatchingError, OutputError

log = logging.getLogger(__name__)
STDOUT = Path("-")
# Errors that mean "no room": a full disk, a quota, a file-size limit (ulimit -f).
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def json_text(value: Any, indent: int | None = None) -> str:
    """JSON that every parser reads: a NaN or infinite number (a measure with nothing to measure,
    say a recall with no true pair among the listings) is written null, not Python's `NaN`."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def file_in_the_way(path: Path) -> Path | None:
    """The file at or above `path` that keeps a folder from being made there (the nearest path
    that exists, where it is no folder); None where there is none."""
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def check_can_make(path: Path, what: str) -> None:
    """A folder `path` can be made later: no file in the way, the nearest folder that exists
    writable. Nothing is made now (a command failing before the end leaves nothing behind)."""
    try:
        existing = next(p for p in path.absolute().parents if p.exists())
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot create it ({e.strerror or e})") from None
    if not existing.is_dir():
        raise OutputError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{what} {path}: folder {existing} is not writable")


def check_writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        if (blocking := file_in_the_way(parent)) is not None:
            raise MatchingError(f"{what} {path}: {blocking} is a file, not a folder")
        raise MatchingError(f"{what} {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise MatchingError(f"{what} {path}: folder {parent} is not writable")


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held while the block runs (results being put in place and their run
    closed: stopping there would leave them whole but called killed); one that came is told after.
    Only the main thread can hold them: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: came.append(signum)) for s in _STOPS}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
        if came:
            log.warning("Stopped as the results were put in place: they are whole, and kept")


_STOPS = (signal.SIGINT, signal.SIGTERM)


def check_report_dir(path: Path) -> None:
    """`--report-dir` is written when the work is done (a whole training): made now, a file tried
    in it and what was made removed again, so that a folder that cannot be made or written is told
    before the work, and a command that fails later leaves none behind."""
    made: list[Path] = []
    try:
        if (blocking := file_in_the_way(path)) is not None:
            raise OutputError(f"--report-dir {path}: {blocking} is a file, not a folder")
        for folder in reversed([path, *path.parents]):
            if not folder.exists():
                folder.mkdir()
                made.append(folder)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputError(
            f"--report-dir {path}: cannot write there ({e.strerror or e}); choose another folder"
        ) from None
    finally:
        for folder in reversed(made):
            folder.rmdir()


def fingerprint_file(path: Path) -> str:
    """Size plus the last 64 KiB (for parquet, the footer: schema and row-group statistics): cheap,
    and content-sensitive."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        digest.update(f.read())
    return digest.hexdigest()[:16]


def content_digest(path: Path) -> str:
    """A hash of the whole file: any change of content changes it. SHA-256, which CPUs compute
    in hardware (SHA-NI): about 1.1 GB/s here, faster than BLAKE2b (0.36 GB/s) or SHA-1."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:32]


def stat_key(path: Path) -> list[int]:
    """What changes whenever a file's content may have: a rewrite in place changes the change
    time (ctime), which no tool can set back, even one that restores the modification time."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only when the block succeeds."""
    parent = path.parent if str(path.parent) else Path(".")
    remove_leftovers(parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".partial", dir=parent)
    # mkstemp makes the file private (0600); the result gets the mode of the file it replaces, or
    # the usual mode for a new file (0644 under umask 022).
    os.fchmod(fd, _existing_mode(path) or 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_no_room(e):
            raise no_room(e, path) from e
        raise


def check_own_folder(path: Path, is_ours: Callable[[str], bool], what: str, remedy: str) -> None:
    """A folder that `matching` fills and prunes, or replaces as a whole, must be absent or hold
    only names that `is_ours` accepts: pointed at the data folder, or at `.`, it would delete the
    user's files or mix with them. `what` names the setting or option, `remedy` what to do."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: not a folder; {remedy}")
    foreign = sorted(
        p.name for p in (path.iterdir() if path.is_dir() else ()) if not is_ours(p.name)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OutputError(
            f"{what} {path}: holds files `matching` did not write ({shown}); {remedy}"
        )


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh staging folder beside `path`; on success it takes the place of `path`.

    A symlink is followed: the folder it points at is replaced (say `prepared -> /scratch/...`,
    kept on a larger disk), and the link stays."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, path.name)
        staging = _temp_dir(path, "partial")
    except OSError as e:
        if is_no_room(e):
            raise no_room(e, path) from e
        if (blocking := file_in_the_way(path.parent)) is not None:
            raise OutputError(
                f"{path}: {blocking} is a file, not a folder; choose another place"
            ) from e
        raise OutputError(
            f"{path}: cannot write it ({e.strerror or e} in {path.parent}); make "
            "that folder writable or choose another place"
        ) from e
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if is_no_room(e):
            raise no_room(e, path) from e
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
        _remove_through_interrupts(backup)


def _remove_through_interrupts(folder: Path) -> None:
    """The new folder is in place: a Ctrl-C while the old one is removed would leave a hidden copy
    of it (a whole store, GBs) that only a later write of the same target clears. Finish, then let
    the interrupt through; a third Ctrl-C gets out at once."""
    interrupted = None
    for _ in range(3):
        try:
            shutil.rmtree(folder, ignore_errors=True)
            break
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


@contextmanager
def output_stream(path: Path, what: str = "output") -> Iterator[BinaryIO]:
    """A binary stream for a result file, by what `path` is now:

    `-` is standard output; a device or pipe (/dev/null, /dev/stdout, a FIFO) is written through,
    its node left in place; a symlink is followed and its target replaced; a regular file, or a
    new one, is replaced atomically; a folder, a link loop or a missing folder is refused."""
    if is_stdout(path):  # `-`, /dev/stdout, or the file stdout is redirected to: its own offset
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = resolve_output(path, what)
    if _write_through(path):
        try:
            with path.open("wb") as stream:
                yield stream
        except OSError as e:
            raise (no_room(e, path) if is_no_room(e) else OutputError(f"{what} {path}: {e}")) from e
        return
    check_writable_parent(target, what)
    with atomic_file(target) as tmp, tmp.open("wb") as stream:
        yield stream


def is_stdout(path: Path) -> bool:
    """`-`, or a path that is this process's standard output (/dev/stdout, /proc/self/fd/1)."""
    if path == STDOUT:
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):  # no such path, or no real stdout
        return False


def _write_through(path: Path) -> bool:
    """A device, a pipe or a socket is written into. So is anything under /dev or /proc:
    `/dev/stdout` links to the process's own output, which may be a redirected file (replacing that
    file would swap the shell's file for another) or a pipe that a resolved path cannot reopen."""
    absolute = os.path.abspath(path)
    if absolute.startswith(("/dev/", "/proc/")):
        return True
    return path.exists() and not path.is_file() and not path.is_dir()


def check_output(path: Path, what: str) -> None:
    """What `output_stream` would refuse (a folder, a link loop, a missing or read-only folder),
    told before any work."""
    if not (is_stdout(path) or _write_through(path)):
        check_writable_parent(resolve_output(path, what), what)


def resolve_output(path: Path, what: str = "output") -> Path:
    """The file that writing `path` would change: a link's target; folders and loops are refused."""
    if _is_loop(path):
        raise OutputError(f"{what} {path}: a symlink loop; point it at a file, or remove it")
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name (e.g. {path}/scores.csv)")
    return target


def _is_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def is_no_room(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in NO_ROOM:
        return True
    # pyarrow's writers raise OSError with the C library's message but no errno.
    text = str(error)
    return isinstance(error, OSError) and (
        "No space left" in text or "Disk quota" in text or "File too large" in text
    )


def no_room(error: BaseException, path: Path) -> OutputError:
    return OutputError(
        f"{path}: no room to write it ({getattr(error, 'strerror', None) or error}); free some "
        "space and run again (nothing was replaced, no temporary file is left)"
    )


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode) if path.is_file() else None
    except OSError:
        return None


def _umask() -> int:
    """The process's umask, read where Linux tells it: setting it to learn it (the only portable
    way) changes it for a moment, and a file another thread creates then gets mode 0666."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _temp_dir(path: Path, kind: str) -> Path:
    # The owner's pid in the name lets a later run tell a dead run's leftovers from a live one's.
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}-{os.getpid()}-", dir=path.parent))


# What `atomic_file` and `atomic_dir` leave beside a target NAME while they work: .NAME.PID-xxx.partial,
# .NAME.partial-PID-xxx and .NAME.old-PID-xxx.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:(?P<kind>partial|old)-)?(?P<pid>\d+)-")


def remove_leftovers(folder: Path, name: str | None = None) -> None:
    """Clear what killed runs left beside their targets in `folder` (beside `name` only, where
    given); put back a folder that a run had moved aside and not replaced."""
    for leftover in folder.glob(f".{name}.*" if name else ".*"):
        match = _LEFTOVER.match(leftover.name)
        if not match or (name and match["name"] != name) or _alive(int(match["pid"])):
            continue
        target = folder / match["name"]
        if match["kind"] == "old" and not target.exists():
            os.replace(leftover, target)
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
