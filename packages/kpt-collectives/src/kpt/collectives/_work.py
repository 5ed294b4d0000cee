"""Work objects: what every collective returns, finished now or when the daemon says so.

A kpt_sim collective is posted at once; a completion thread (one per process group) asks the
daemon about the oldest unfinished one, backing off between polls, and completes its Future.
The thread never holds the server: every poll is one short call.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future

from kpt.collectives._errors import CollectiveError, CollectiveTimeoutError

FIRST_POLL_S = 50e-6  # a DDP bucket's peers usually post within a few hundred microseconds
MAX_POLL_S = 2e-3  # slower polling costs latency; faster costs the daemon's CPU
DAEMON_GRACE_S = 10.0  # beyond the collective's own timeout: the daemon itself is stuck


def finished(result: Any = None) -> dist.Work:
    """A Work that is already complete (host-side paths that ran synchronously)."""
    future: Future = Future()
    future.set_result(result)
    return torch._C._distributed_c10d._create_work_from_future(future)


class FutureWork(dist.Work):
    """Completed by someone else (the completion thread); wait() and get_future() as torch's."""

    def __init__(self, future: Future, what: str) -> None:
        super().__init__()
        self._future = future
        self._what = what

    def wait(self, timeout: Any = None) -> bool:
        self._future.wait()  # raises the collective's error, if any
        return True

    def is_completed(self) -> bool:
        return self._future.done()

    def is_success(self) -> bool:
        if not self._future.done():
            return False
        try:
            self._future.value()
        except Exception:
            return False
        return True

    def get_future(self) -> Future:
        return self._future

    def __repr__(self) -> str:
        return f"FutureWork({self._what}, done={self._future.done()})"


class LibraryWork(dist.Work):
    """A library's Work (gloo, nccl) whose failures are raised as kpt.collectives errors."""

    def __init__(self, inner: dist.Work, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._what = what

    def wait(self, timeout: Any = None) -> bool:
        try:
            return self._inner.wait() if timeout is None else self._inner.wait(timeout)
        except Exception as exc:
            raise library_error(exc, self._what) from exc

    def is_completed(self) -> bool:
        return self._inner.is_completed()

    def is_success(self) -> bool:
        return self._inner.is_success()

    def get_future(self) -> Future:
        return self._inner.get_future()


def library_error(exc: Exception, what: str) -> CollectiveError:
    """gloo and nccl report a missing peer as a timeout in their own words: type it."""
    text = str(exc)
    if "timed out" in text.lower() or "timeout" in text.lower():
        return CollectiveTimeoutError(
            f"{what}: a peer never joined in time (a rank is slow, hung or dead, or called a "
            f"different collective); the library said: {text.strip()[:300]}"
        )
    return CollectiveError(f"{what}: {type(exc).__name__}: {text.strip()[:500]}")


@dataclass
class Pending:
    """A posted collective this rank waits for."""

    what: str  # for errors: "all_reduce #12 of group ..."
    poll: Callable[[], bool]  # True once done; raises its error
    future: Future
    result: Any  # what the Future resolves to (torch's convention: the output tensors)
    deadline: float
    finish: Callable[[], None] | None = None  # copies out of staging tensors, then done
    keep: tuple = field(default_factory=tuple)  # tensors that must outlive the collective


class Completer:
    """Polls posted collectives in order and completes their Futures (one thread per group)."""

    def __init__(self, name: str, classify: Callable[[Exception], Exception]) -> None:
        self._name = name
        self._classify = classify
        self._queue: collections.deque[Pending] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, pending: Pending) -> None:
        with self._cond:
            if self._stopped:
                raise CollectiveError(f"{pending.what}: the process group was shut down")
            self._queue.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"kpt-collectives {self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
            left, self._queue = list(self._queue), collections.deque()
        for pending in left:
            if not pending.future.done():
                pending.future.set_exception(
                    CollectiveError(f"{pending.what}: the process group was shut down")
                )
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                pending = self._queue[0]
            self._complete(pending)
            with self._cond:
                if self._queue and self._queue[0] is pending:
                    self._queue.popleft()

    def _complete(self, pending: Pending) -> None:
        pause = FIRST_POLL_S
        try:
            while not pending.poll():
                if time.monotonic() > pending.deadline:
                    raise CollectiveTimeoutError(
                        f"{pending.what}: the simulator daemon gave no outcome within the "
                        "collective's timeout; it is stuck or overloaded"
                    )
                time.sleep(pause)
                pause = min(pause * 2, MAX_POLL_S)
                if self._stopped:
                    return
            if pending.finish is not None:
                with torch.no_grad():
                    pending.finish()
        except Exception as exc:  # every failure reaches the rank, typed
            pending.future.set_exception(self._classify(exc))
            return
        pending.future.set_result(pending.result)
