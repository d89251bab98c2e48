"""Progress reporting that the core calls and the CLI plugs in.

The core only knows the `Reporter` protocol; `RichReporter` draws bars on stderr and is switched off
when stderr is not a terminal (logs then carry the per-step log lines instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Reporter(Protocol):
    def task(self, description: str, total: float | None, unit: str = "items") -> Task: ...


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...
    def update(self, *, description: str | None = None, total: float | None = None) -> None: ...
    def close(self) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    """Reports nothing: the default for library use and tests."""

    def task(self, description: str, total: float | None, unit: str = "items") -> Task:
        return _NullTask()


class _RichTask:
    def __init__(self, progress: Progress, task_id: TaskID):
        self._progress, self._id = progress, task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._id, amount)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        self._progress.update(self._id, description=description, total=total)

    def close(self) -> None:
        self._progress.remove_task(self._id)


class RichReporter:
    """Bars on stderr: bytes with speed and time left for transfers, counts for everything else."""

    def __init__(self, byte_progress: Progress, count_progress: Progress):
        self._bytes, self._counts = byte_progress, count_progress

    def task(self, description: str, total: float | None, unit: str = "items") -> Task:
        progress = self._bytes if unit == "bytes" else self._counts
        return _RichTask(progress, progress.add_task(description, total=total))


@contextmanager
def rich_reporter(console: Console, enabled: bool) -> Iterator[Reporter]:
    if not enabled or not console.is_terminal:
        yield NullReporter()
        return
    byte_progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    count_progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    from rich.console import Group
    from rich.live import Live

    with Live(Group(byte_progress, count_progress), console=console, refresh_per_second=8):
        yield RichReporter(byte_progress, count_progress)
