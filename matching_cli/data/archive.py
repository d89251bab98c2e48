"""Safe unpacking of a downloaded zip archive.

The archive comes from the network, so nothing in it is trusted: every entry is checked before
anything is written (no absolute paths, drive letters, `..` components or symlinks; no more than
the allowed unpacked size; no absurd compression ratios), and the bytes actually unpacked are
counted while copying rather than taken from the headers. Only the wanted files are written, each
under its own basename, into a folder the caller chooses.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from matching_cli.errors import DownloadError
from matching_cli.files import is_no_room
from matching_cli.progress import Reporter, closing

CHUNK_BYTES = 1 << 20
MAX_RATIO = 1000  # real parquet files compress a few times at most
RATIO_CHECK_BYTES = 4 << 20  # small entries may compress absurdly well without harm
IGNORED_FOLDERS = ("__MACOSX",)


def unpack_zip(
    zip_path: Path,
    dest: Path,
    *,
    required: Sequence[str],
    one_of: Sequence[str],
    max_bytes: float,
    reporter: Reporter,
) -> list[str]:
    """Write the `required` files and any of `one_of` (at least one) flat into `dest`.

    They are found by basename at the top of the archive or one folder down; other entries are
    checked for safety but not written. Returns the basenames written.
    """
    if not zipfile.is_zipfile(zip_path):
        raise DownloadError(
            f"{zip_path.name} is not a whole zip archive: the download may have broken off (run "
            "again), or the link is not to the competition's archive (check download.public_link)"
        )
    try:
        with zipfile.ZipFile(zip_path) as zf:
            _check_entries(zf, zip_path.name, max_bytes)
            members = _find_members(zf, (*required, *one_of))
            _check_complete(members, zf, zip_path.name, required, one_of)
            needed = sum(info.file_size for info in members.values())
            _check_disk_space(dest, needed)
            task = reporter.task(f"unpacking {zip_path.name}", total=needed, unit="bytes")
            with closing(task):
                for basename, info in members.items():
                    _copy_member(zf, info, dest / basename, task.advance)
    except zipfile.BadZipFile as e:
        raise DownloadError(
            f"{zip_path.name} is not a readable zip archive ({e}); download it again"
        ) from e
    return sorted(members)


def _check_entries(zf: zipfile.ZipFile, name: str, max_bytes: float) -> None:
    """Refuse the whole archive if any entry could write outside the target or is a bomb."""
    declared = 0
    for info in zf.infolist():
        _check_path(info, name)
        _check_ratio(info, name)
        declared += info.file_size
        if declared > max_bytes:
            raise DownloadError(
                f"{name}: entry {info.filename!r} takes the unpacked size past "
                f"{max_bytes / 1e9:g} GB; raise download.max_unpacked_gb if the archive is trusted"
            )


def _check_path(info: zipfile.ZipInfo, name: str) -> None:
    entry = info.filename
    windows = PureWindowsPath(entry)
    if windows.drive or windows.root or entry.startswith("/"):
        problem = "an absolute path"
    elif ".." in _parts(entry):
        problem = "a '..' path"
    elif stat.S_ISLNK(info.external_attr >> 16):
        problem = "a symbolic link"
    else:
        return
    raise DownloadError(f"{name}: entry {entry!r} is {problem}; refusing to unpack the archive")


def _check_ratio(info: zipfile.ZipInfo, name: str) -> None:
    if info.file_size <= RATIO_CHECK_BYTES:
        return
    ratio = info.file_size / max(info.compress_size, 1)
    if ratio > MAX_RATIO:
        raise DownloadError(
            f"{name}: entry {info.filename!r} claims a {ratio:.0f}:1 compression ratio; "
            "refusing a likely zip bomb"
        )


def _find_members(zf: zipfile.ZipFile, wanted: Sequence[str]) -> dict[str, zipfile.ZipInfo]:
    found: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        parts = _parts(info.filename)
        if info.is_dir() or not parts or len(parts) > 2 or parts[0] in IGNORED_FOLDERS:
            continue
        basename = parts[-1]
        if basename not in wanted:
            continue
        if basename in found:
            raise DownloadError(
                f"the archive holds {basename} twice ({found[basename].filename!r} and "
                f"{info.filename!r}); cannot tell which one to use"
            )
        found[basename] = info
    return found


def _check_complete(
    members: dict[str, zipfile.ZipInfo],
    zf: zipfile.ZipFile,
    name: str,
    required: Sequence[str],
    one_of: Sequence[str],
) -> None:
    missing = [f for f in required if f not in members]
    if one_of and not any(f in members for f in one_of):
        missing.append(" or ".join(one_of))
    if missing:
        raise DownloadError(f"{name} lacks {', '.join(missing)}; it holds: {_list_names(zf)}")


def _list_names(zf: zipfile.ZipFile, limit: int = 10) -> str:
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    shown = ", ".join(names[:limit]) or "nothing"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_disk_space(dest: Path, needed: int) -> None:
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise DownloadError(
            f"unpacking needs {needed / 1e9:.1f} GB but {dest} has {free / 1e9:.1f} GB free"
        )


def _copy_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, on_bytes: Callable[[int], None]
) -> None:
    written = 0
    try:
        with zf.open(info) as src, target.open("wb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                written += len(chunk)
                # Headers can lie: count what really comes out.
                if written > info.file_size:
                    raise DownloadError(
                        f"entry {info.filename!r} unpacks to more than the {info.file_size} "
                        "bytes it declares; refusing the archive"
                    )
                dst.write(chunk)
                on_bytes(len(chunk))
    except OSError as e:
        if is_no_room(e):
            raise  # `atomic_dir` names the data folder and says what to do
        raise DownloadError(f"cannot unpack entry {info.filename!r}: {e}") from e
    except (zipfile.BadZipFile, EOFError) as e:  # a bad CRC, truncated data
        raise DownloadError(
            f"cannot unpack entry {info.filename!r}: {e}; the archive is damaged: download it again"
        ) from e
    except (RuntimeError, NotImplementedError) as e:  # an encrypted entry, an unknown compression
        raise DownloadError(f"cannot unpack entry {info.filename!r}: {e}") from e


def _parts(filename: str) -> tuple[str, ...]:
    # Backslashes count as separators too: some Windows tools write them into zip names.
    return PurePosixPath(filename.replace("\\", "/")).parts
