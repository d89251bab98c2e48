"""Work in forked processes beside this one's: they start with this process's memory (the
listings' arrays, the item matrix) without its being sent, and send back only their results.

`beside` runs one function while the caller does other work (prepare's two halves); `ahead`
computes the next chunks while the caller uses this one (prepare's labelled pairs; predict and
match: the whole scoring on a CPU, the pair features beside the forward pass on a GPU). A process
that dies is reported, not waited for; those still running when the caller fails or stops are
killed, and on Linux they die with the caller when it is killed outright. What they log is sent
back with their results and logged by the caller (`_LogToParent`).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

import numpy as np


@contextmanager
def beside(work: Callable[..., object], *args: object) -> Iterator[Callable[[], Any]]:
    """`work(*args)` in a forked process while the caller's block runs, which calls the function
    it is given to wait for its result (and get its error). A `work` that is a generator sends
    each value it yields as soon as it has it, then what it returns: one call gives each. Where
    `can_fork` says no, it runs here, each call running it on to its next value (so that it can
    wait for what the caller sends it before that call)."""
    if not can_fork():
        outcomes = _outcomes(work, args)
        yield lambda: next(outcomes)
        return
    forked = Forked(work, *args)
    try:
        yield forked.result
    finally:
        forked.stop()  # stopped if this block failed first; else already done


def _outcomes(function: Callable[..., object], args: tuple) -> Iterator[object]:
    """`function(*args)`; for a generator, each value it yields, then what it returns."""
    result = function(*args)
    if isinstance(result, Generator):
        result = yield from result
    yield result


T = TypeVar("T")


def ahead(
    function: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    chunks: Iterable[T],
    pairs_of: Callable[[T], tuple[np.ndarray, np.ndarray] | None],
    workers: int = 1,
    start: Callable[[], None] | None = None,
) -> Iterator[tuple[T, np.ndarray | None]]:
    """Each chunk, in order, with `function(*pairs_of(chunk))` (None for a chunk whose `pairs_of`
    is None); the next `workers` chunks' are computed in forked processes while the caller works
    on this one, each chunk by whichever process is free first. `start()` runs once in each of
    them first.

    The processes are forked once and share this one's memory (the listings' arrays, the item
    matrix, the model; copy-on-write); only the item rows go to them and the results come back.
    They are stopped when the caller is done, fails or stops. With `workers` 0 all is computed
    here."""
    if function is None or workers < 1:
        for chunk in chunks:
            pairs = pairs_of(chunk)
            yield chunk, None if function is None or pairs is None else function(*pairs)
        return
    started: list[_Server] = []
    pending: deque[_Pending[T]] = deque()
    try:
        for _ in range(workers):  # inside the try: a failed fork stops those already started
            started.append(_Server(function, start))
        idle = list(started)
        for chunk in chunks:
            pairs = pairs_of(chunk)
            entry = _Pending(chunk, done=pairs is None)
            if pairs is not None:
                while not idle:  # a worker is sent work only once its last result is taken
                    idle.append(_finish_any(pending))
                entry.worker = idle.pop()
                entry.worker.send(pairs)
            pending.append(entry)
            yield from _finished_in_order(pending)  # used by the caller while the workers compute
        while pending:
            _finish_any(pending)
            yield from _finished_in_order(pending)
    finally:
        for worker in started:
            worker.stop()


class _Pending(Generic[T]):
    """A chunk sent to `worker` (None: nothing to compute), and its result once taken."""

    def __init__(self, chunk: T, done: bool):
        self.chunk = chunk
        self.worker: _Server | None = None
        self.done = done
        self.result: np.ndarray | None = None

    def outcome(self) -> tuple[T, np.ndarray | None]:
        return self.chunk, self.result


def _finished_in_order(pending: deque[_Pending[T]]) -> Iterator[tuple[T, np.ndarray | None]]:
    """The finished chunks at the head of the queue, taken off it."""
    while pending and pending[0].done:
        yield pending.popleft().outcome()


def _finish_any(pending: deque[_Pending[T]]) -> _Server:
    """Takes the result of whichever busy worker finishes first, and returns that worker, idle
    again. Waiting for the first chunk's worker instead went wrong with chunks of uneven size (a
    parquet file's row groups of 1,048,576 rows, read in chunks of a million, give 1,000,000 and
    48,576 rows by turns): every large chunk went to the same worker while the other waited, and
    `predict` ran on one core."""
    busy = {entry.worker: entry for entry in pending if entry.worker and not entry.done}
    ready = multiprocessing.connection.wait(
        [handle for worker in busy for handle in worker.signals()]
    )
    worker = next(worker for worker in busy if set(worker.signals()) & set(ready))
    entry = busy[worker]
    entry.result, entry.done = worker.result(), True
    return worker


class _Server:
    """A forked process that answers `function(left, right)` for each pair of arrays sent to it,
    one at a time, until it is stopped."""

    def __init__(
        self,
        function: Callable[[np.ndarray, np.ndarray], np.ndarray],
        start: Callable[[], None] | None = None,
    ):
        context = multiprocessing.get_context("fork")
        self._connection, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(os.getpid(), theirs, function, start), daemon=True
        )
        self._process.start()
        theirs.close()

    def send(self, pairs: tuple[np.ndarray, np.ndarray]) -> None:
        self._connection.send(pairs)

    def result(self) -> np.ndarray:
        return _received(self._connection, self._process)

    def signals(self) -> list[Connection | int]:
        """What becomes ready when it has a result or has died, for `connection.wait`."""
        return [self._connection, self._process.sentinel]

    def stop(self) -> None:
        _stop(self._process, self._connection)


def _serve(
    parent: int,
    connection: Connection,
    function: Callable[..., np.ndarray],
    start: Callable[[], None] | None,
) -> None:
    _die_with(parent)
    _LogToParent.install(connection)
    keep_freed_memory()
    if start is not None:
        start()
    while True:
        try:
            left, right = connection.recv()
        except EOFError:
            return
        _send_result(connection, function, (left, right))


class Forked:
    """`function(*args)` in a forked process, which has this process's memory without its being
    sent; only the result comes back (pickled through a pipe), or each value of a generator.
    `result()` waits for the next one and raises the function's error, or a RuntimeError when the
    process died (killed for memory, say)."""

    def __init__(self, function: Callable[..., object], *args: object):
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_run_and_send, args=(os.getpid(), send, function, args), daemon=True
        )
        self._process.start()
        send.close()

    def result(self) -> Any:
        return _received(self._receive, self._process)

    def stop(self) -> None:
        _stop(self._process, self._receive)


def _received(connection: Connection, process: multiprocessing.process.BaseProcess) -> Any:
    """What the process sent: its result, or its error raised here; a RuntimeError when it ended
    without sending anything."""
    while True:
        multiprocessing.connection.wait([connection, process.sentinel])
        try:  # a result or a log record sent, or the pipe closed by the process's end (EOF)
            ok, value = connection.recv()
        except EOFError:
            process.join()
            raise RuntimeError(
                f"a worker process stopped without a result (exit code {process.exitcode}; "
                "killed for memory?)"
            ) from None
        if ok is None:
            _log_here(*value)
        elif not ok:
            raise value
        else:
            return value


def _stop(process: multiprocessing.process.BaseProcess, connection: Connection) -> None:
    """SIGKILL: the process was forked with this one's handlers, which turn SIGTERM into a
    KeyboardInterrupt that a worker reports instead of ending."""
    if process.is_alive():
        process.kill()
    process.join()
    connection.close()


def _run_and_send(
    parent: int, send: Connection, function: Callable[..., object], args: tuple
) -> None:
    _die_with(parent)
    _LogToParent.install(send)
    try:
        _send_result(send, function, args)
    finally:
        send.close()


# A worker's sends, of results and of log records (which another of its threads may make): one
# message at a time on the pipe.
_SENDING = threading.Lock()


def _send_result(send: Connection, function: Callable[..., object], args: tuple) -> None:
    """Each of `_outcomes(function, args)` sent as (True, value), or an error as (False, error)."""
    try:
        for value in _outcomes(function, args):
            with _SENDING:
                send.send((True, value))
    except BaseException as error:  # told to the parent, which raises it
        with _SENDING:
            try:
                send.send((False, error))
            except Exception:  # an error that cannot be pickled: its text, not a silent death
                send.send((False, RuntimeError(f"{type(error).__name__}: {error}")))


class _LogToParent(logging.Handler):
    """In a worker, in place of the handlers it was forked with: each record is sent to the parent,
    which logs it when it next waits for the worker's result (`_received`). Written by the worker
    itself, a warning went through the parent's progress display, and was lost where the parent's
    stderr is no file (a test's captured output)."""

    def __init__(self, connection: Connection):
        super().__init__()
        self._connection = connection

    @classmethod
    def install(cls, connection: Connection) -> None:
        logging.getLogger().handlers = [cls(connection)]

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        with _SENDING, suppress(OSError):  # OSError: the parent stopped listening
            self._connection.send((None, (record.name, record.levelno, message, record.created)))


def _log_here(name: str, level: int, message: str, created: float) -> None:
    """A worker's log record (`_LogToParent`) logged by this process's handlers, with its time."""
    logger = logging.getLogger(name)
    record = logger.makeRecord(name, level, "(worker)", 0, message, None, None)
    record.created, record.msecs = created, (created % 1) * 1000
    logger.handle(record)


def _linux_libc(name: str) -> Callable[..., int] | None:
    """The C library's function `name` on Linux; None elsewhere, or where the library lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1  # Linux's prctl option


def _die_with(parent: int) -> None:
    """This process killed when `parent`, which forked it, dies (on Linux). A process that is
    killed outright (SIGKILL, the machine's out-of-memory killer) runs no cleanup: its workers
    worked on as orphans, and prepare's wrote into a folder the next run had removed, making it
    again. Elsewhere they are still stopped by `stop` when the parent ends normally."""
    prctl = _linux_libc("prctl")
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """glibc's malloc told to keep the memory this process frees, for its next allocations.

    A worker's temporaries are about the same each chunk. Given back to the system and taken
    again, each 4 KiB page of them cost a page fault: 10M pairs at the real size took 4.7M faults
    and 21 s of system time in `predict` (2.8M and 14 s without the pair features). Kept, 1.07M
    and 8 s: 75-78 s instead of 80-89 (53-55 instead of 53-63), the same scores. Blocks up to
    32 MB (glibc's most) come from the heap, which is no longer trimmed below 2 GB free; larger
    ones are still mapped and unmapped. Nothing where the C library is not glibc. (`prepare` and
    `train`, tried the same way, gained nothing.)"""
    mallopt = _linux_libc("mallopt")
    if mallopt is None:
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)


def one_per_core() -> int:
    """Workers for `ahead` that keep every core busy while this process only hands out chunks
    and takes results: one a core; none where `can_fork` says no."""
    return available_cores() if can_fork() else 0


def can_fork() -> bool:
    """A second core, and processes that start as copies of this one (not on Windows): the
    workers read the listings' arrays without their being sent."""
    return available_cores() >= 2 and "fork" in multiprocessing.get_all_start_methods()


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
