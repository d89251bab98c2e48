"""Getting the raw data: a real HTTP server on 127.0.0.1 playing Yandex Disk, and real DVC."""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from matching_cli.data.download import (
    atomic_data_dir,
    download_yandex,
    pull_dvc,
    track_with_dvc,
)
from matching_cli.data.layout import ARCHIVE_FILES as EXPECTED_FILES
from matching_cli.data.layout import data_present
from matching_cli.errors import DownloadError, OutputError
from matching_cli.progress import LoggingReporter
from matching_cli.settings import DownloadSettings

PUBLIC_LINK = "https://disk.yandex.ru/d/test-link"
DATA_FILES = (*EXPECTED_FILES, "resnet.parquet")


# --- a fake Yandex Disk -------------------------------------------------------------------------


class FakeDisk(ThreadingHTTPServer):
    """What the handler serves; tests set these fields, `reset` puts the defaults back."""

    def reset(self) -> None:
        self.zip_body = b""
        self.api_status = 200
        self.api_body: bytes | None = None  # None: a proper {"href": ...} answer
        self.redirect_to: str | None = None
        self.truncate = False
        self.file_status = 200
        self.send_without_length = False  # and hang up halfway: the end cannot be told from a cut
        self.stall_after: int | None = None  # bytes sent before the server stops answering
        self.paths: list[str] = []
        self.public_keys: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeDiskHandler(BaseHTTPRequestHandler):
    server: FakeDisk

    def do_GET(self) -> None:
        disk = self.server
        disk.paths.append(self.path)
        url = urlsplit(self.path)
        if url.path == "/v1/disk/public/resources/download":
            disk.public_keys.extend(parse_qs(url.query).get("public_key", []))
            answer = {"href": f"{disk.url}/files/competition.zip"}
            self._send(disk.api_status, disk.api_body or json.dumps(answer).encode())
        elif url.path == "/files/competition.zip" and disk.redirect_to:
            self.send_response(302)
            self.send_header("Location", disk.redirect_to)
            self.end_headers()
        elif url.path == "/files/competition.zip" and disk.file_status != 200:
            self._send(disk.file_status, b"oops")
        elif url.path == "/files/competition.zip" and disk.send_without_length:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(disk.zip_body[: len(disk.zip_body) // 2])
            self.close_connection = True
        elif url.path == "/files/competition.zip" and disk.stall_after is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(disk.zip_body)))
            self.end_headers()
            self.wfile.write(disk.zip_body[: disk.stall_after])
            self.wfile.flush()
            time.sleep(3)  # past the client's timeout
            self.close_connection = True
        elif url.path == "/files/competition.zip" and disk.truncate:
            # Promise the whole archive, send half of it, hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(disk.zip_body)))
            self.end_headers()
            self.wfile.write(disk.zip_body[: len(disk.zip_body) // 2])
            self.close_connection = True
        elif url.path == "/files/competition.zip":
            self._send(200, disk.zip_body)
        else:
            self._send(404, b"{}")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[FakeDisk]:
    disk = FakeDisk(("127.0.0.1", 0), FakeDiskHandler)
    disk.reset()
    thread = threading.Thread(target=disk.serve_forever, daemon=True)
    thread.start()
    yield disk
    disk.shutdown()
    disk.server_close()


@pytest.fixture
def disk(server: FakeDisk, parquet_files: dict[str, bytes]) -> FakeDisk:
    server.reset()
    server.zip_body = make_zip(parquet_files)
    return server


@pytest.fixture
def settings(server: FakeDisk) -> DownloadSettings:
    return DownloadSettings(api_url=server.url, public_link=PUBLIC_LINK, timeout_s=5)


# --- building archives --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parquet_files() -> dict[str, bytes]:
    """Tiny parquet files, each with different content so that mix-ups show."""
    files = {}
    for i, name in enumerate(DATA_FILES):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"variantid": [i, i + 1], "file": [name, name]}), buffer)
        files[name] = buffer.getvalue()
    return files


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def zip_with_symlink(entries: dict[str, bytes], link: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo(link)
        info.create_system = 3  # unix, so the mode bits count
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return buffer.getvalue()


def understate_size(zip_bytes: bytes, entry: str, declared: int) -> bytes:
    """Rewrite the central directory so that `entry` claims fewer bytes than it holds."""
    data = bytearray(zip_bytes)
    header = data.index(b"PK\x01\x02")  # the first central directory record
    while True:
        name_len = struct.unpack_from("<H", data, header + 28)[0]
        if data[header + 46 : header + 46 + name_len].decode() == entry:
            struct.pack_into("<I", data, header + 24, declared)  # uncompressed size
            return bytes(data)
        extra, comment = struct.unpack_from("<HH", data, header + 30)
        header = data.index(b"PK\x01\x02", header + 46 + name_len + extra + comment)


@dataclass
class RecordedTask:
    description: str
    total: float | None
    unit: str
    advanced: float = 0
    closed: bool = False

    def advance(self, amount: float = 1) -> None:
        self.advanced += amount

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        self.total = total if total is not None else self.total

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingReporter:
    tasks: list[RecordedTask] = field(default_factory=list)

    def task(self, description: str, total: float | None, unit: str = "items") -> RecordedTask:
        self.tasks.append(RecordedTask(description, total, unit))
        return self.tasks[-1]


def folder_contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


# --- downloading --------------------------------------------------------------------------------


def test_download_puts_the_files_in_place_and_reports_bytes(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    reporter = RecordingReporter()
    result = download_yandex(settings, tmp_path / "data", reporter=reporter)

    assert folder_contents(tmp_path / "data") == parquet_files
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging folder left behind
    assert not result.skipped
    assert result.files == tuple(sorted(DATA_FILES))
    assert result.bytes == len(disk.zip_body)
    assert disk.public_keys == [PUBLIC_LINK]
    download, unpack = reporter.tasks
    assert (download.unit, download.total, download.advanced) == (
        "bytes",
        result.bytes,
        result.bytes,
    )
    assert unpack.advanced == unpack.total == sum(map(len, parquet_files.values()))
    assert download.closed and unpack.closed


def test_files_one_folder_down_are_found_and_extras_ignored(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    files = {n: parquet_files[n] for n in EXPECTED_FILES}
    files["images_embed.parquet"] = parquet_files["resnet.parquet"]  # the other image table name
    entries = {f"competition/{name}": data for name, data in files.items()}
    entries |= {"__MACOSX/competition/._train.parquet": b"junk", "competition/.DS_Store": b"x"}
    entries |= {"README.txt": b"hello", "deeper/still/more/test.parquet": b"not this one"}
    disk.zip_body = make_zip(entries)

    download_yandex(settings, tmp_path / "data")

    assert folder_contents(tmp_path / "data") == files


def test_rerun_skips_and_force_replaces_everything(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    download_yandex(settings, data_dir)
    requests_after_first = len(disk.paths)

    again = download_yandex(settings, data_dir)
    assert again.skipped and again.bytes == 0
    assert len(disk.paths) == requests_after_first

    (data_dir / "stale.parquet").write_bytes(b"from an older edition")
    forced = download_yandex(settings, data_dir, force=True)
    assert not forced.skipped and len(disk.paths) == 2 * requests_after_first
    assert folder_contents(data_dir) == parquet_files


def test_interrupted_transfer_leaves_the_old_data_untouched(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.parquet").write_bytes(b"old data")
    disk.truncate = True

    with pytest.raises(DownloadError, match=r"interrupted after \d+ of \d+ bytes; run again"):
        download_yandex(settings, data_dir, force=True)

    assert folder_contents(data_dir) == {"train.parquet": b"old data"}
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("../evil.parquet", "'..'"),
        ("competition/../../evil.parquet", "'..'"),
        ("/tmp/evil.parquet", "absolute"),
        ("C:\\evil.parquet", "absolute"),
        ("link", "symbolic link"),
    ],
)
def test_unsafe_entries_refuse_the_whole_archive(
    disk: FakeDisk,
    settings: DownloadSettings,
    parquet_files: dict[str, bytes],
    tmp_path: Path,
    entry: str,
    problem: str,
) -> None:
    if entry == "link":
        disk.zip_body = zip_with_symlink(parquet_files, entry, "/etc/passwd")
    else:
        disk.zip_body = make_zip({**parquet_files, entry: b"evil"})
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(DownloadError, match=problem) as error:
        download_yandex(settings, work / "data")

    assert repr(entry) in str(error.value)
    assert list(tmp_path.rglob("*")) == [work]  # nothing written anywhere, no staging left


def test_archive_declaring_more_than_the_limit_is_refused(
    disk: FakeDisk, parquet_files: dict[str, bytes], server: FakeDisk, tmp_path: Path
) -> None:
    tiny = DownloadSettings(api_url=server.url, public_link=PUBLIC_LINK, max_unpacked_gb=1e-6)
    with pytest.raises(DownloadError, match=r"entry '.+\.parquet'.*max_unpacked_gb"):
        download_yandex(tiny, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_entry_with_absurd_compression_ratio_is_refused(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    bomb = {**parquet_files, "padding.bin": bytes(8 << 20)}
    disk.zip_body = make_zip(bomb, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(DownloadError, match=r"'padding.bin' claims a \d+:1 compression ratio"):
        download_yandex(settings, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_entry_holding_more_than_it_declares_is_refused(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    honest = make_zip(parquet_files, compression=zipfile.ZIP_STORED)
    disk.zip_body = understate_size(honest, "train.parquet", 10)
    with pytest.raises(DownloadError, match=r"'train\.parquet'"):
        download_yandex(settings, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_body_that_is_not_a_zip_is_refused(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    disk.zip_body = b"<html>Too many requests</html>"
    with pytest.raises(DownloadError, match=r"competition\.zip is not a whole zip archive"):
        download_yandex(settings, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_a_transfer_cut_short_without_a_length_is_told_as_possibly_that(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    # Without Content-Length a cut looks like the end: the archive's check is what finds it, and
    # it said only "check download.public_link".
    disk.send_without_length = True
    with pytest.raises(DownloadError, match=r"not a whole zip archive: the download may have"):
        download_yandex(settings, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_a_stalled_transfer_counts_what_came_and_is_logged_as_stopped(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk.zip_body += os.urandom(300_000)  # stored after the archive: more than the part sent
    disk.stall_after = 100_000
    stalling = settings.model_copy(update={"timeout_s": 1})
    caplog.set_level(logging.INFO)
    # Read in 1 MiB blocks, the 100,000 bytes that came were not counted ("after 0 of ...").
    with pytest.raises(DownloadError, match=r"interrupted after 100000 of \d+ bytes \(timed out\)"):
        download_yandex(stalling, tmp_path / "data", reporter=LoggingReporter())
    assert "downloading competition.zip: stopped (0.1 MiB of" in caplog.text
    assert ": done" not in caplog.text  # it said "done" of a transfer that failed
    assert list(tmp_path.iterdir()) == []


def test_no_room_while_downloading_is_the_no_room_error(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    disk.zip_body = make_zip(
        parquet_files | {"padding.bin": os.urandom(2 << 20)}, zipfile.ZIP_STORED
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # Python ignores SIGXFSZ: EFBIG
    try:
        with pytest.raises(
            OutputError, match=r"data: no room to write it \(File too large\); free"
        ):
            download_yandex(settings, tmp_path / "data")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("status", "hint"), [(404, "check download.public_link"), (500, "try again later")]
)
def test_an_http_error_on_the_file_says_what_to_do(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path, status: int, hint: str
) -> None:
    disk.file_status = status
    with pytest.raises(DownloadError, match=rf"competition\.zip: HTTP {status} .*; {hint}$"):
        download_yandex(settings, tmp_path / "data")


def test_a_redirect_loop_is_one_line(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    disk.redirect_to = f"{disk.url}/files/competition.zip"
    with pytest.raises(DownloadError, match=r"HTTP 302 .*infinite loop; check download") as error:
        download_yandex(settings, tmp_path / "data")
    assert "\n" not in str(error.value)


def test_a_data_folder_that_cannot_be_made_is_one_line(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputError, match=r"afile/data: .*afile is a file, not a folder"):
        download_yandex(settings, tmp_path / "afile" / "data")


def test_archive_without_the_expected_files_names_what_is_missing(
    disk: FakeDisk, settings: DownloadSettings, parquet_files: dict[str, bytes], tmp_path: Path
) -> None:
    disk.zip_body = make_zip({"train.parquet": parquet_files["train.parquet"], "notes.txt": b""})
    with pytest.raises(DownloadError) as error:
        download_yandex(settings, tmp_path / "data")
    message = str(error.value)
    assert "lacks test.parquet, text_and_bert.parquet, attributes.parquet, " in message
    assert "resnet.parquet or images_embed.parquet" in message
    assert "it holds: train.parquet, notes.txt" in message


@pytest.mark.parametrize("answer", [b'{"error": "DiskNotFoundError"}', b"<html>oops</html>"])
def test_api_answer_without_href_is_an_error(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path, answer: bytes
) -> None:
    disk.api_body = answer
    with pytest.raises(DownloadError, match=r"without a download link \('href'\)") as error:
        download_yandex(settings, tmp_path / "data")
    assert answer.decode() in str(error.value)
    assert "/v1/disk/public/resources/download?public_key=" in str(error.value)


def test_api_http_error_shows_the_status_and_the_explanation(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    disk.api_status = 404
    disk.api_body = json.dumps({"description": "Resource not found."}).encode()
    with pytest.raises(DownloadError, match=r"HTTP 404 .*\(Resource not found\.\)"):
        download_yandex(settings, tmp_path / "data")


def test_plain_http_is_refused_before_any_request(disk: FakeDisk, tmp_path: Path) -> None:
    remote = DownloadSettings(api_url="http://example.com", public_link=PUBLIC_LINK)
    with pytest.raises(DownloadError, match=r"refusing http://example\.com/.*only https"):
        download_yandex(remote, tmp_path / "data")
    assert disk.paths == []


def test_plain_http_download_link_is_refused(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    disk.api_body = json.dumps({"href": "http://example.com/competition.zip"}).encode()
    with pytest.raises(DownloadError, match=r"refusing http://example\.com/competition\.zip"):
        download_yandex(settings, tmp_path / "data")
    assert len(disk.paths) == 1  # only the API was asked


def test_redirect_to_plain_http_is_refused(
    disk: FakeDisk, settings: DownloadSettings, tmp_path: Path
) -> None:
    disk.redirect_to = "http://example.com/competition.zip"
    with pytest.raises(DownloadError, match=r"refusing http://example\.com/competition\.zip"):
        download_yandex(settings, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


# --- the data folder ----------------------------------------------------------------------------


def test_data_present_needs_every_file_and_one_image_table(tmp_path: Path) -> None:
    for name in EXPECTED_FILES:
        (tmp_path / name).touch()
    assert not data_present(tmp_path)
    (tmp_path / "images_embed.parquet").touch()
    assert data_present(tmp_path)
    assert not data_present(tmp_path / "missing")


def test_atomic_data_dir_swaps_in_on_success(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "old.parquet").write_bytes(b"old")
    with atomic_data_dir(data_dir, force=True) as staging:
        assert staging.parent == tmp_path and staging != data_dir
        (staging / "new.parquet").write_bytes(b"new")
        assert folder_contents(data_dir) == {"old.parquet": b"old"}
    assert folder_contents(data_dir) == {"new.parquet": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize("interruption", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_data_dir_keeps_the_old_folder_when_interrupted(
    tmp_path: Path, interruption: BaseException
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "old.parquet").write_bytes(b"old")
    with pytest.raises(type(interruption)), atomic_data_dir(data_dir, force=True) as staging:
        (staging / "half.parquet").write_bytes(b"half")
        raise interruption
    assert folder_contents(data_dir) == {"old.parquet": b"old"}
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_data_written_meanwhile_by_another_download_is_left_alone(tmp_path: Path) -> None:
    """Two downloads into one new folder: the later one replaced the first one's data, although
    without --force a folder holding files is not replaced."""
    data_dir = tmp_path / "data"
    another = pytest.raises(DownloadError, match="written by another command while this one ran")
    with another, atomic_data_dir(data_dir) as staging:
        (staging / "train.parquet").write_bytes(b"mine")
        data_dir.mkdir()
        (data_dir / "train.parquet").write_bytes(b"theirs")
    assert folder_contents(data_dir) == {"train.parquet": b"theirs"}
    assert [p.name for p in tmp_path.iterdir()] == ["data"]

    with atomic_data_dir(data_dir, force=True) as staging:
        (staging / "train.parquet").write_bytes(b"mine")
    assert folder_contents(data_dir) == {"train.parquet": b"mine"}


def test_atomic_data_dir_refuses_a_folder_that_holds_folders(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(DownloadError, match=r"holds folders \(src\)"), atomic_data_dir(tmp_path):
        pass
    assert (tmp_path / "src").is_dir()


# --- DVC ----------------------------------------------------------------------------------------


def run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)


def dvc(*args: str, cwd: Path) -> None:
    run([sys.executable, "-m", "dvc", *args], cwd)


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory, parquet_files: dict[str, bytes]) -> Path:
    """A git + DVC repository whose `data/` was tracked by `track_with_dvc`. Do not modify it."""
    root = tmp_path_factory.mktemp("repo")
    run(["git", "init", "-q"], root)
    dvc("init", "-q", cwd=root)
    (root / "data").mkdir()
    for name, data in parquet_files.items():
        (root / "data" / name).write_bytes(data)
    assert track_with_dvc(root / "data", root)
    return root


def copy_repo(repo: Path, dest: Path, *, with_cache: bool) -> Path:
    skipped = {"data"} | ({"cache"} if not with_cache else set())
    shutil.copytree(repo, dest, ignore=lambda _dir, names: [n for n in names if n in skipped])
    return dest


def test_track_with_dvc_writes_data_dvc(dvc_repo: Path) -> None:
    outs = yaml.safe_load((dvc_repo / "data.dvc").read_text())["outs"]
    assert outs[0]["path"] == "data"
    assert outs[0]["nfiles"] == len(DATA_FILES)
    assert "/data" in (dvc_repo / ".gitignore").read_text().splitlines()


def test_track_with_dvc_does_nothing_outside_a_dvc_repository(
    dvc_repo: Path, tmp_path: Path
) -> None:
    assert not track_with_dvc(tmp_path / "data", tmp_path)
    assert not track_with_dvc(tmp_path / "data", dvc_repo)  # outside the repository
    assert not (tmp_path / "data.dvc").exists()


def test_pull_dvc_without_a_remote_says_how_to_add_one(dvc_repo: Path, tmp_path: Path) -> None:
    clone = copy_repo(dvc_repo, tmp_path / "clone", with_cache=False)
    with pytest.raises(DownloadError, match=r"no DVC remote is configured.*`dvc remote add -d"):
        pull_dvc(clone / "data", clone)


def test_pull_dvc_restores_the_files_from_a_remote(
    dvc_repo: Path, tmp_path: Path, parquet_files: dict[str, bytes]
) -> None:
    clone = copy_repo(dvc_repo, tmp_path / "clone", with_cache=True)
    shutil.copytree(dvc_repo / "data", clone / "data")
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=clone)
    dvc("push", "-q", cwd=clone)
    shutil.rmtree(clone / "data")
    shutil.rmtree(clone / ".dvc" / "cache")

    pull_dvc(clone / "data", clone)

    assert folder_contents(clone / "data") == parquet_files


def test_pull_dvc_overwrites_changed_files_only_when_forced(
    dvc_repo: Path, tmp_path: Path, parquet_files: dict[str, bytes]
) -> None:
    clone = copy_repo(dvc_repo, tmp_path / "clone", with_cache=True)
    shutil.copytree(dvc_repo / "data", clone / "data")
    (clone / "data" / "train.parquet").write_bytes(b"edited by hand")
    with pytest.raises(DownloadError, match="`matching download --source dvc --force` overwrites"):
        pull_dvc(clone / "data", clone)
    assert (clone / "data" / "train.parquet").read_bytes() == b"edited by hand"

    pull_dvc(clone / "data", clone, force=True)  # `download --source dvc --force` ignored it

    assert folder_contents(clone / "data") == parquet_files


def test_pull_dvc_needs_a_dvc_repository_and_a_dvc_file(dvc_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="is not a DVC repository; run `dvc init`"):
        pull_dvc(tmp_path / "data", tmp_path)
    with pytest.raises(DownloadError, match=r"other\.dvc not found"):
        pull_dvc(dvc_repo / "other", dvc_repo)
