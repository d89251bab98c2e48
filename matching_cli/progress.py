"""Progress reporting that the core calls and the CLI plugs in.

The core only knows the `Reporter` protocol; `RichReporter` draws bars on stderr when it is a
terminal. Where it is not (a pipe, a log file, CI), `LoggingReporter` logs each task's start and
end, with counts and times, and a line a minute in between, so a log is never silent for minutes.
"""

from __future__ import annotations

import logging
import time
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

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def task(self, description: str, total: float | None, unit: str = "items") -> Task: ...


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...
    def update(self, *, description: str | None = None, total: float | None = None) -> None: ...
    def close(self, outcome: str = "done") -> None:
        """`outcome`: what the log line says became of it ("stopped" where it failed)."""


@contextmanager
def closing(task: Task) -> Iterator[Task]:
    """`task`, closed as done when the block ends, as stopped where it raised."""
    try:
        yield task
    except BaseException:
        task.close("stopped")
        raise
    task.close()


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        pass

    def close(self, outcome: str = "done") -> None:
        pass


class NullReporter:
    """Reports nothing: the default for library use and tests."""

    def task(self, description: str, total: float | None, unit: str = "items") -> Task:
        return _NullTask()


class _LoggedTask:
    def __init__(self, description: str, total: float | None, unit: str, every_s: float):
        self._description, self._total, self._unit = description, total, unit
        self._done, self._every_s = 0.0, every_s
        self._started = self._last_line = time.perf_counter()
        self._closed = False
        log.info("%s: started%s", description, f" ({self._count(total)})" if total else "")

    def _count(self, amount: float | None) -> str:
        if amount is None:
            return ""
        if self._unit == "bytes":
            return f"{amount / 2**20:,.1f} MiB"
        return f"{amount:,.0f} {self._unit}"

    def _so_far(self) -> str:
        if self._total and self._done != self._total:
            return f"{self._count(self._done)} of {self._count(self._total)}"
        return self._count(self._done) if self._done else ""

    def advance(self, amount: float = 1) -> None:
        self._done += amount
        now = time.perf_counter()
        if now - self._last_line >= self._every_s:
            self._last_line = now
            log.info(
                "%s: %s, %.0f s so far", self._description, self._so_far(), now - self._started
            )

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        # A new description carries live figures (a loss) meant for a bar; the log keeps the name.
        if total is not None:
            self._total = total

    def close(self, outcome: str = "done") -> None:
        if self._closed:
            return
        self._closed = True
        seconds = time.perf_counter() - self._started
        done = self._so_far()
        shown = f" ({done})" if done else ""
        log.info("%s: %s%s in %.1f s", self._description, outcome, shown, seconds)


class LoggingReporter:
    """Log lines instead of bars: start, a line every `every_s` seconds, and end of each task."""

    def __init__(self, every_s: float = 60.0):
        self.every_s = every_s

    def task(self, description: str, total: float | None, unit: str = "items") -> Task:
        return _LoggedTask(description, total, unit, self.every_s)


class _RichTask:
    def __init__(self, progress: Progress, task_id: TaskID):
        self._progress, self._id = progress, task_id
        self._closed = False

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._id, amount)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        self._progress.update(self._id, description=description, total=total)

    def close(self, outcome: str = "done") -> None:
        if not self._closed:  # closed twice (a `closing` block that closed it itself) is fine
            self._closed = True
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
    if not enabled:
        yield NullReporter()
        return
    if not console.is_terminal:
        yield LoggingReporter()
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
