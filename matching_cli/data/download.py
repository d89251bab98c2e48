"""Getting the raw parquet files: from the Yandex Disk public link, or from a DVC remote.

Whatever the source, the data folder is replaced in one step (`atomic_data_dir`): an interrupted
run leaves either the old folder untouched or the new one complete, never a mix.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from matching_cli.data import archive
from matching_cli.data.layout import ARCHIVE_FILES, IMAGE_FILES, data_present
from matching_cli.data.readers import first_line
from matching_cli.errors import DownloadError
from matching_cli.files import atomic_dir, is_no_room
from matching_cli.progress import NullReporter, Reporter, Task, closing
from matching_cli.settings import DownloadSettings

log = logging.getLogger(__name__)

ARCHIVE_NAME = "competition.zip"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class DownloadResult:
    skipped: bool
    files: tuple[str, ...]
    bytes: int  # downloaded from the network; 0 when skipped


def download_yandex(
    settings: DownloadSettings,
    data_dir: Path,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
) -> DownloadResult:
    """Fetch competition.zip from the public link and put its parquet files in `data_dir`."""
    if data_present(data_dir) and not force:
        log.debug("%s already holds the data: nothing to download", data_dir)
        return DownloadResult(skipped=True, files=_parquet_names(data_dir), bytes=0)
    reporter = reporter or NullReporter()
    href = resolve_download_url(settings)
    with atomic_data_dir(data_dir, force=force) as staging:
        zip_path = staging / ARCHIVE_NAME
        received = fetch(href, zip_path, settings.timeout_s, reporter)
        archive.unpack_zip(
            zip_path,
            staging,
            required=ARCHIVE_FILES,
            one_of=IMAGE_FILES,
            max_bytes=settings.max_unpacked_gb * 1e9,
            reporter=reporter,
        )
        zip_path.unlink()
    files = _parquet_names(data_dir)
    log.info("downloaded %d bytes; %s now holds %s", received, data_dir, ", ".join(files))
    return DownloadResult(skipped=False, files=files, bytes=received)


def resolve_download_url(settings: DownloadSettings) -> str:
    """Ask the Yandex Disk API for the direct download link behind the public link."""
    key = urllib.parse.quote(settings.public_link, safe="")
    url = f"{settings.api_url.rstrip('/')}/v1/disk/public/resources/download?public_key={key}"
    with _open(url, settings.timeout_s) as response:
        try:
            body = response.read(1 << 16)
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(f"{url}: the answer broke off ({e}); run again") from e
    try:
        href = json.loads(body).get("href")
    except (ValueError, AttributeError):
        href = None
    if not isinstance(href, str) or not href:
        shown = body[:200].decode("utf-8", "replace")
        raise DownloadError(f"{url} answered without a download link ('href'): {shown!r}")
    return href


def fetch(url: str, dest: Path, timeout_s: float, reporter: Reporter) -> int:
    """Stream `url` into `dest` in chunks of up to 1 MiB; returns the bytes received."""
    with _open(url, timeout_s) as response:
        total = _content_length(response)
        with closing(reporter.task(f"downloading {ARCHIVE_NAME}", total, unit="bytes")) as task:
            try:
                return _copy_stream(response, dest, total, task)
            except OSError as e:  # reading errors are DownloadErrors already: this is the disk
                if is_no_room(e):
                    raise  # `atomic_dir` names the data folder and says what to do
                raise DownloadError(f"cannot write the download: {e.strerror or e}") from e


@contextlib.contextmanager
def atomic_data_dir(data_dir: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder next to `data_dir`; on success it replaces `data_dir`.

    On any exception, KeyboardInterrupt included, the staging folder is removed and `data_dir`
    is left as it was. A folder that holds folders is refused; one that holds files is replaced
    only with `force`, and the files it replaced are named.
    """
    replaced = _check_replaceable(data_dir, force)
    with atomic_dir(data_dir) as staging:
        yield staging
        if not force and _files(data_dir) != replaced:
            # Another download finished meanwhile: its data is not replaced without --force.
            raise DownloadError(
                f"{data_dir} was written by another command while this one ran; left as that "
                "one wrote it: pass --force to replace it"
            )
    if replaced:
        log.warning(
            "--force: replaced %d files in %s: %s", len(replaced), data_dir, _shown(replaced)
        )


@dataclass(frozen=True)
class Tracked:
    """What `dvc add` did: whether the .dvc file changed (so there is something to commit) and the
    default remote that `dvc push` would upload to (None: no remote, `dvc push` would fail)."""

    dvc_file: Path
    changed: bool
    remote: str | None


def pull_dvc(data_dir: Path, repo_root: Path, force: bool = False) -> str:
    """Restore `data_dir` with `dvc pull <data_dir>.dvc`; returns where the files came from (with no
    remote configured, DVC takes them from its local cache when it has them). DVC will not
    overwrite files changed since they were tracked; `force` lets it (`dvc pull --force`)."""
    if not is_dvc_repo(repo_root):
        raise DownloadError(
            f"{repo_root} is not a DVC repository; run `dvc init` there and track the data "
            "with `dvc add`, or download it from the public link"
        )
    dvc_file = data_dir.parent / f"{data_dir.name}.dvc"
    if not dvc_file.is_file():
        raise DownloadError(
            f"{dvc_file} not found: the data is not tracked by DVC here; download it, then "
            f"`dvc add {data_dir.name}`"
        )
    try:
        target = _relative(dvc_file, repo_root)
    except ValueError:
        raise DownloadError(f"{dvc_file} is outside the DVC repository {repo_root}") from None
    remote = default_remote(repo_root)
    result = _run_dvc(["pull", *(["--force"] if force else []), str(target)], repo_root)
    if result.returncode == 0:
        return f"the DVC remote {remote!r}" if remote else "the local DVC cache (.dvc/cache)"
    if "no default remote" in result.stderr.lower():
        raise DownloadError(
            "no DVC remote is configured: add one with `dvc remote add -d NAME URL`, "
            "or download the data from the public link"
        )
    # DVC's own advice names its flag; ours is the command's.
    hint = (
        "; `matching download --source dvc --force` overwrites them"
        if "--force" in result.stderr
        else ""
    )
    raise DownloadError(f"`dvc pull {dvc_file.name}` failed: {_dvc_error(result.stderr)}{hint}")


def track_with_dvc(data_dir: Path, repo_root: Path) -> Tracked | None:
    """Run `dvc add <data_dir>` when `repo_root` is a DVC repository; None when it did not run."""
    if not is_dvc_repo(repo_root):
        log.debug("%s is not a DVC repository; not tracking %s", repo_root, data_dir)
        return None
    try:
        target = _relative(data_dir, repo_root)
    except ValueError:
        log.info("%s is outside the DVC repository %s; not tracking it", data_dir, repo_root)
        return None
    dvc_file = data_dir.parent / f"{data_dir.name}.dvc"
    before = dvc_file.read_bytes() if dvc_file.is_file() else None
    result = _run_dvc(["add", str(target)], repo_root)
    if result.returncode != 0:
        raise DownloadError(f"`dvc add {target}` failed: {_dvc_error(result.stderr)}")
    log.info("tracked %s with DVC (%s.dvc)", target, target)
    changed = dvc_file.read_bytes() != before
    return Tracked(dvc_file, changed, default_remote(repo_root))


def default_remote(repo_root: Path) -> str | None:
    """The remote `dvc push` and `dvc pull` use, or None when none is configured."""
    result = _run_dvc(["remote", "default"], repo_root)
    name = result.stdout.strip()
    return name if result.returncode == 0 and name else None


def is_dvc_repo(path: Path) -> bool:
    return (path / ".dvc").is_dir()


def _check_replaceable(data_dir: Path, force: bool) -> list[str]:
    """The files that replacing `data_dir` would remove; refused without `force` (the user's notes,
    a partial catalogue), and always refused for a folder of folders (say `--data-dir .`)."""
    if not data_dir.exists():
        return []
    if not data_dir.is_dir():
        raise DownloadError(f"{data_dir} is not a folder; point data.dir at a folder of its own")
    folders = [p.name for p in data_dir.iterdir() if p.is_dir()]
    if folders:
        raise DownloadError(
            f"{data_dir} holds folders ({', '.join(sorted(folders)[:5])}), so it does not look "
            "like a data folder; refusing to replace it: point data.dir at a folder of its own"
        )
    files = _files(data_dir)
    if files and not force:
        raise DownloadError(
            f"{data_dir} already holds {len(files)} files ({_shown(files)}) and not the whole "
            "data set; the download would replace them all: pass --force to replace them, or "
            "point --data-dir at an empty folder"
        )
    return files


def _files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else []


def _shown(names: list[str], most: int = 8) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _require_secure(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return
    raise DownloadError(f"refusing {url}: only https URLs (or http on this machine) are allowed")


class _SecureRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs that pass the same https check as the first one."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _require_secure(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, timeout_s: float) -> http.client.HTTPResponse:
    _require_secure(url)
    opener = urllib.request.build_opener(_SecureRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "matching-cli"})
    try:
        return opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        hint = "try again later" if e.code >= 500 else "check download.public_link"
        reason = first_line(str(e.reason)).rstrip(".")
        raise DownloadError(f"{url}: HTTP {e.code} {reason}{_api_message(e)}; {hint}") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot reach {url} ({e.reason}); check the network") from e
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"cannot reach {url} ({e}); check the network") from e


def _api_message(error: urllib.error.HTTPError) -> str:
    """The Yandex API explains its errors in a JSON body; show that explanation."""
    try:
        body = json.loads(error.read(1 << 16))
        text = body.get("description") or body.get("message")
    except (ValueError, AttributeError, OSError):
        return ""
    return f" ({text})" if text else ""


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _copy_stream(
    response: http.client.HTTPResponse, dest: Path, total: int | None, task: Task
) -> int:
    received = 0
    with dest.open("wb") as out:
        while True:
            try:
                # read1: what has come, so a transfer that stalls counts every byte it got.
                chunk = response.read1(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as e:
                raise _interrupted(received, total, e) from e
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            task.advance(len(chunk))
    if total is not None and received < total:
        raise _interrupted(received, total)
    return received


def _interrupted(received: int, total: int | None, cause: object = None) -> DownloadError:
    of_total = f" of {total}" if total is not None else ""
    why = f" ({cause})" if cause else ""
    return DownloadError(f"download interrupted after {received}{of_total} bytes{why}; run again")


def _parquet_names(data_dir: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in data_dir.glob("*.parquet")))


def _relative(path: Path, root: Path) -> Path:
    return path.resolve().relative_to(root.resolve())


def _run_dvc(args: list[str], repo_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    command = [sys.executable, "-m", "dvc", *args]
    log.debug("running %s in %s", " ".join(command), repo_root)
    result = subprocess.run(
        command, cwd=repo_root, env=env, capture_output=True, text=True, check=False
    )
    log.debug("dvc stdout: %s\ndvc stderr: %s", result.stdout, result.stderr)
    return result


def _dvc_error(stderr: str) -> str:
    """DVC's message from its `ERROR:` line onwards, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("ERROR")]
    tail = lines[starts[-1] :] if starts else lines[-1:]
    return " ".join(tail).removeprefix("ERROR: ") or "no message; rerun with --verbose"
