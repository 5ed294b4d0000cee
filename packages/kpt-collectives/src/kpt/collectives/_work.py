"""Work objects: what every collective returns, finished now or when the daemon says so.

A kpt_sim collective is posted at once and, as NCCL's is at the enqueue, complete at once
(`Posted`): the daemon runs it when the last rank posts, and until it says so the client holds
the collective's buffers (kpt.sim._client_holds), so work that touches them, and any host wait,
waits for it first. A completion thread (one per process group) asks the daemon about the
oldest unsettled one, backing off between polls; the thread never holds the server: every poll
is one short call. The post itself waits in the client's queue with the launches (kpt-sim's
collective_cast) until the rank's next call or any poll sends it: this thread's first poll,
HANDOFF_S after the post, is what bounds that wait for a rank that makes no call. Collectives
that copy out of staging tensors afterwards (`Pending`) complete their Future only when the
daemon says they ran.

As with NCCL, a collective does not make the rank's stream wait for it: ``wait()`` does (its
``join``), or, for collectives posted during a backward pass (DDP's buckets, FSDP's
reduce-scatters), the end of that backward pass, so the simulated collective overlaps the rest
of backward as it would on a GPU.
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

FIRST_POLL_S = 20e-6  # peers usually post within a round trip: look again soon
MAX_POLL_S = 5e-4  # slower polling costs latency; faster costs the daemon's CPU
HANDOFF_S = 1e-3  # the completion thread leaves a Future this long to a waiting caller
# (and a queued post this long in the client before its poll sends it)
DAEMON_GRACE_S = 10.0  # beyond the collective's own timeout: the daemon itself is stuck
MAX_IN_FLIGHT = 1024  # unsettled collectives per group: the next post settles the oldest first


def finished(result: Any = None) -> dist.Work:
    """A Work that is already complete (host-side paths that ran synchronously)."""
    future: Future = Future()
    future.set_result(result)
    return torch._C._distributed_c10d._create_work_from_future(future)


class FutureWork(dist.Work):
    """A kpt_sim collective: wait() polls the daemon itself; the group's completion thread
    completes get_future() for those who never wait (DDP's reducer).

    `future` is resolved when the collective is done; None for a Work complete at its post
    (`Posted`), whose Future, resolved with `result`, is made only when asked for (a
    synchronous all_reduce never asks)."""

    def __init__(self, future: Future | None, what: str, result: Any = None) -> None:
        super().__init__()
        self._future = future
        self._result = result
        self._native: Future | None = None  # made by get_future() (see there)
        self._what = what
        self._timing: dict | None = None
        # kpt_sim: asks the daemon for the collective's simulated times (see `timing`)
        self.measure: Callable[[], dict] | None = None
        self.pending: Pending | Posted | None = None  # set while the daemon may still be asked
        # makes the rank's stream wait for the collective (idempotent); None: nothing to do
        self.join: Callable[[], None] | None = None

    def wait(self, timeout: Any = None) -> bool:
        if self.pending is not None:
            self.pending.on_wait()
        if self._future is not None:
            self._future.wait()  # raises the collective's error, if any
        if self.join is not None:
            self.join()
        return True

    @property
    def timing(self) -> dict | None:
        """kpt_sim, once done: the algorithm, its closed-form `predicted` seconds and `nbytes`;
        on first read also the simulated start, last_arrival, end, duration and transfer_time,
        asked of the daemon (that waits for the collective, as an event's elapsed time does:
        knowing it is done never does, so later launches overlap it). None elsewhere."""
        if self.pending is not None:
            self.pending.settle()
        if self._timing is not None and "duration" not in self._timing and self.measure:
            self._timing.update(self.measure())
        return self._timing

    @timing.setter
    def timing(self, value: dict | None) -> None:
        self._timing = value

    def join_at_backward_end(self) -> bool:
        """Inside a backward pass: make the stream wait once backward has issued everything
        (before DDP's finalize, whose callback is queued after the hooks). False outside."""
        if torch._C._current_graph_task_id() == -1:  # outside backward (a raise costs more)
            return False
        try:
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)
        except RuntimeError:  # "only during backward pass": the caller joins at wait()
            return False
        return True

    def _backward_end(self) -> None:
        # Never raises (an exception in an autograd callback aborts the process): a failure
        # stays for whoever waits on the Work or touches its buffers.
        if isinstance(self.pending, Pending):
            self.pending.settle()
        if self.is_success() and self.join is not None:
            self.join()

    def is_completed(self) -> bool:
        return self._future is None or self._future.done()

    def is_success(self) -> bool:
        if self._future is None:
            return True
        if not self._future.done():
            return False
        try:
            self._future.value()
        except Exception:
            return False
        return True

    def get_future(self) -> Future:
        # torch's Python Future.set_exception stores the exception as a *successful* value
        # (only Python's value() raises it); C++ readers (DDP's reducer) took it for a result
        # and crashed. They get this child instead, failed natively when the collective fails.
        # Made on first ask, not per collective: a synchronous all_reduce never asks.
        if self._native is None:
            self._native = self.resolved_future().then(_value)
        return self._native

    def resolved_future(self) -> Future:
        """The Python Future: the one given, or (complete at the post) one resolved now."""
        if self._future is None:
            future: Future = Future()
            future.set_result(self._result)
            self._future = future
        return self._future

    def __repr__(self) -> str:
        return f"FutureWork({self._what}, done={self.is_completed()})"


def _value(future: Future) -> Any:
    return future.value()  # raises the collective's error, which fails the child Future


def wait_library(work: dist.Work, what: str) -> None:
    """Wait for a library's Work inside a staged step, its failure raised as ours."""
    try:
        work.wait()
    except Exception as exc:
        raise library_error(exc, what) from exc


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
    """A posted collective this rank waits for; whichever thread holds `lock` polls it."""

    what: str  # for errors: "all_reduce #12 of group ..."
    poll: Callable[[], dict | None]  # the daemon's timing once done; raises its error
    future: Future
    result: Any  # what the Future resolves to (torch's convention: the output tensors)
    deadline: float
    classify: Callable[[Exception], Exception]
    finish: Callable[[], None] | None = None  # copies out of staging tensors, then done
    keep: tuple = field(default_factory=tuple)  # tensors that must outlive the collective
    work: FutureWork | None = None  # gets the timing
    lock: threading.Lock = field(default_factory=threading.Lock)
    posted: float = field(default_factory=time.monotonic)

    def step(self) -> bool:
        """Poll once (unless resolved); True once the Future is resolved either way."""
        with self.lock:
            if self.future.done():
                return True
            try:
                timing = _outcome(self.poll, self.deadline, self.what)
                if timing is None:
                    return False
                if self.work is not None:
                    self.work.timing = timing
                if self.finish is not None:  # copies on the rank's stream: after the collective
                    if self.work is not None and self.work.join is not None:
                        self.work.join()
                    with torch.no_grad():
                        self.finish()
            except Exception as exc:  # every failure reaches the rank, typed
                self.keep = ()
                self.future.set_exception(self.classify(exc))
                return True
            self.keep = ()
            self.future.set_result(self.result)
            return True

    def settle(self, stopped: Callable[[], bool] = lambda: False) -> None:
        """Poll with backoff until resolved (or `stopped`)."""
        _poll_until(self.step, stopped)

    on_wait = settle  # wait() polls here: no hand-off to the completion thread


class Posted:
    """A kpt_sim collective whose Work completed at the post, as NCCL's does at the enqueue.

    The daemon runs it when the last rank posts; until it says so, the client holds its buffers
    (`hold`, dropped once the outcome is known). Work that touches them, or a host wait, settles
    it first and gets its failure; so does `wait()` once the failure is known (NCCL's watchdog,
    too, reports a failed collective at a later call).

    One object per post, its state in slots and its callbacks methods (no closures, partials or
    lock of its own): a program posts thousands, each alive until the daemon answers, and every
    object that outlives a garbage-collector pass moves on to the older generations, whose full
    passes walk every object of the process (torch's included). Once settled it drops the Work,
    so the two are freed without the collector."""

    __slots__ = ("classify", "client", "deadline", "done", "error", "group", "hold", "join_on",
                 "lock", "posted", "seq", "tensors", "what", "work")  # fmt: skip

    def __init__(
        self, client: Any, group: str, seq: int, what: str, deadline: float,
        classify: Callable[[Exception, str], Exception], lock: threading.Lock,
        work: FutureWork, tensors: tuple, join_on: tuple[int, int, int] | None = None,
    ) -> None:  # fmt: skip
        self.client, self.group, self.seq, self.what = client, group, seq, what
        self.deadline, self.classify, self.lock = deadline, classify, lock
        self.work: FutureWork | None = work  # gets the timing; None once settled
        self.tensors = tensors  # must outlive the collective
        self.hold: Any = None  # the client's hold on the buffers, set by the poster
        self.join_on = join_on  # (device, stream, the collective's stream); None once joined
        self.error: Exception | None = None
        self.done = False
        self.posted = time.monotonic()

    def poll(self) -> dict | None:
        """The daemon's timing once done, None before; raises its error."""
        return self.client.collective_poll(self.group, self.seq)

    def measure(self) -> dict:
        """The collective's simulated times (waits for it, as an event's elapsed time does)."""
        return self.client.collective_timing(self.group, self.seq)

    def join(self) -> None:
        """Make the rank's stream wait for everything on the collective's stream so far, once:
        one queued op, no round trip (what work.wait() does to the current stream with NCCL)."""
        if self.join_on is not None:
            device, stream, comm = self.join_on
            self.join_on = None
            self.client.wait_stream(device, stream, comm)

    def step(self) -> bool:
        """Poll once (unless settled); True once the daemon's outcome is known."""
        with self.lock:
            if self.done:
                return True
            try:
                timing = _outcome(self.poll, self.deadline, self.what)
                if timing is None:
                    return False
                if self.work is not None:
                    self.work.timing = timing
                if self.hold is not None:
                    self.client.holds.release(self.hold)
            except Exception as exc:  # kept for whoever touches the buffers or waits next
                self.error = self.classify(exc, self.what)
            self.done, self.tensors, self.work = True, (), None
            return True

    def settle(self, stopped: Callable[[], bool] = lambda: False) -> None:
        """Poll with backoff until the outcome is known (or `stopped`)."""
        _poll_until(self.step, stopped)

    def __call__(self) -> None:
        """What the client's hold runs: wait for the outcome, raise the failure."""
        self.settle()
        if self.error is not None:
            raise self.error

    def on_wait(self) -> None:
        if self.error is not None:
            raise self.error


def _outcome(poll: Callable[[], dict | None], deadline: float, what: str) -> dict | None:
    """One poll: the daemon's timing, None while ranks may still come; past the deadline, the
    daemon itself is stuck."""
    timing = poll()
    if timing is None and time.monotonic() > deadline:
        raise CollectiveTimeoutError(
            f"{what}: the simulator daemon gave no outcome within the collective's timeout; it "
            "is stuck or overloaded"
        )
    return timing


def _poll_until(step: Callable[[], bool], stopped: Callable[[], bool]) -> None:
    pause = FIRST_POLL_S
    while not step() and not stopped():
        time.sleep(pause)
        pause = min(pause * 2, MAX_POLL_S)


class Completer:
    """Polls posted collectives in order and completes their Futures (one thread per group)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: collections.deque[Pending | Posted] = collections.deque()
        # A plain lock under the condition: a post takes it with one C call (a Condition's
        # own `with` runs two Python methods).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, pending: Pending | Posted) -> None:
        while True:  # back-pressure: the daemon keeps 4,096 unpolled outcomes per client
            with self._lock:
                if len(self._queue) < MAX_IN_FLIGHT:  # the usual case: one lock, no wait
                    self._enqueue(pending)
                    return
                oldest = self._queue[0]
            oldest.settle(lambda: self._stopped)
            with self._lock:
                if self._queue and self._queue[0] is oldest:
                    self._queue.popleft()

    def _enqueue(self, pending: Pending | Posted) -> None:
        """With the lock held."""
        if self._stopped:
            raise CollectiveError(f"{pending.what}: the process group was shut down")
        self._queue.append(pending)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"kpt-collectives {self._name}", daemon=True
            )
            self._thread.start()
        if len(self._queue) == 1:  # the thread waits only on an empty queue
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
            left, self._queue = list(self._queue), collections.deque()
        for pending in left:  # a Posted one's Work completed at its post
            if isinstance(pending, Pending) and not pending.future.done():
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

    def _complete(self, pending: Pending | Posted) -> None:
        # A caller that waits polls on its own thread; this thread steps in for Futures nobody
        # waits on (DDP's reducer), after a grace period, so the two do not poll side by side.
        time.sleep(max(0.0, pending.posted + HANDOFF_S - time.monotonic()))
        pending.settle(lambda: self._stopped)
