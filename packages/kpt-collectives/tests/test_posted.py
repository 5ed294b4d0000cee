"""A kpt_sim collective's Work completes at the post (`Posted`); the daemon's outcome follows."""

from __future__ import annotations

import threading
import time

import pytest

from kpt.collectives import _work
from kpt.collectives._errors import CollectiveTimeoutError
from kpt.collectives._work import Completer, FutureWork, Posted


class Daemon:
    """The client a Posted collective asks: polls answer None (ranks missing) `waits` times,
    then the timing or an error; its holds record what is released."""

    def __init__(self, waits: int = 0, error: Exception | None = None) -> None:
        self.waits, self.error, self.polls = waits, error, 0
        self.released: list = []
        self.holds = self  # release(hold)
        self.joined: list = []

    def collective_poll(self, group: str, seq: int) -> dict | None:
        assert (group, seq) == ("g", 0)
        self.polls += 1
        if self.polls <= self.waits:
            return None
        if self.error is not None:
            raise self.error
        return {"algorithm": "ring", "predicted": 1e-6, "nbytes": 4}

    def collective_timing(self, group: str, seq: int) -> dict:
        return {"start": 0.0, "duration": 1e-6}

    def release(self, hold: object) -> None:
        self.released.append(hold)

    def wait_stream(self, device: int, stream: int, on: int) -> None:
        self.joined.append((device, stream, on))


def classify(exc: Exception, what: str) -> Exception:
    return CollectiveTimeoutError(f"{what}: {exc}")


def posted(daemon: Daemon, deadline_s: float = 30.0) -> Posted:
    work = FutureWork(None, "all_reduce #0", ["t"])  # complete at the post, as NCCL's Work
    p = Posted(daemon, "g", 0, "all_reduce #0", time.monotonic() + deadline_s, classify,
               threading.Lock(), work, (), (0, 0, 1023))  # fmt: skip
    p.hold = "hold"
    work.pending, work.join, work.measure = p, p.join, p.measure
    return p


def test_the_work_is_complete_at_once_and_the_outcome_releases_the_hold():
    daemon = Daemon(waits=3)
    p = posted(daemon)
    work = p.work
    assert work.is_completed() and work.get_future().done()
    assert work.wait() and work.wait()  # no poll: a stream join, as NCCL's wait(), once
    assert daemon.polls == 0 and daemon.joined == [(0, 0, 1023)]
    p()  # what the client's hold runs
    assert daemon.polls == 4 and daemon.released == ["hold"]
    assert work.timing["algorithm"] == "ring" and work.timing["duration"] == 1e-6
    assert p.work is None and p.tensors == ()  # settled: the Work is freed by its owners alone


def test_a_work_complete_at_the_post_makes_its_future_only_when_asked():
    work = posted(Daemon()).work
    assert work._future is None and work.is_success()
    future = work.get_future()
    assert future is work.get_future() and future.value() == ["t"]
    assert work.resolved_future().done() and work.resolved_future().value() == ["t"]


def test_a_failure_is_raised_by_the_hold_and_then_by_wait():
    daemon = Daemon(error=RuntimeError("ranks [1] never arrived"))
    p = posted(daemon)
    work = p.work
    with pytest.raises(CollectiveTimeoutError, match=r"all_reduce #0: ranks \[1\] never arrived"):
        p()
    with pytest.raises(CollectiveTimeoutError):
        work.wait()
    assert daemon.released == []  # the hold is dropped by whoever got the failure


def test_a_daemon_that_never_answers_is_a_timeout_not_a_hang():
    p = posted(Daemon(waits=10**9), deadline_s=0.05)
    with pytest.raises(CollectiveTimeoutError, match="no outcome within"):
        p()


def test_a_group_with_too_many_unsettled_collectives_settles_the_oldest_before_posting(
    monkeypatch,
):
    """The daemon keeps 4,096 unpolled outcomes per client: posting far ahead would lose some."""
    monkeypatch.setattr(_work, "MAX_IN_FLIGHT", 2)
    monkeypatch.setattr(_work, "HANDOFF_S", 60.0)  # the completion thread stays out of it
    completer = Completer("g")
    daemons = [Daemon(waits=2) for _ in range(3)]
    try:
        for d in daemons:
            completer.submit(posted(d))
        assert daemons[0].polls == 3  # settled by the third submit
        assert daemons[1].polls == daemons[2].polls == 0
    finally:
        completer.stop()
