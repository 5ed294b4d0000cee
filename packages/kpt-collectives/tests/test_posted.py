"""A kpt_sim collective's Work completes at the post (`Posted`); the daemon's outcome follows."""

from __future__ import annotations

import time

import pytest

from kpt.collectives import _work
from kpt.collectives._errors import CollectiveTimeoutError
from kpt.collectives._work import Completer, FutureWork, Posted


class Daemon:
    """Answers polls: None (ranks missing) `waits` times, then the timing or an error."""

    def __init__(self, waits: int = 0, error: Exception | None = None) -> None:
        self.waits, self.error, self.polls = waits, error, 0

    def poll(self) -> dict | None:
        self.polls += 1
        if self.polls <= self.waits:
            return None
        if self.error is not None:
            raise self.error
        return {"algorithm": "ring", "predicted": 1e-6, "nbytes": 4}


def posted(daemon: Daemon, released: list, deadline_s: float = 30.0) -> Posted:
    work = FutureWork(None, "all_reduce #0", ["t"])  # complete at the post, as NCCL's Work
    p = Posted("all_reduce #0", daemon.poll, time.monotonic() + deadline_s,
               lambda exc: CollectiveTimeoutError(f"all_reduce #0: {exc}"), work,
               release=lambda: released.append(True))  # fmt: skip
    work.pending = p
    return p


def test_the_work_is_complete_at_once_and_the_outcome_releases_the_hold():
    daemon, released = Daemon(waits=3), []
    p = posted(daemon, released)
    assert p.work.is_completed() and p.work.get_future().done()
    assert p.work.wait()  # no poll: a stream join, as NCCL's wait()
    assert daemon.polls == 0
    p.settle_hold()
    assert daemon.polls == 4 and released == [True]
    assert p.work.timing["algorithm"] == "ring"


def test_a_work_complete_at_the_post_makes_its_future_only_when_asked():
    p = posted(Daemon(), [])
    assert p.work._future is None and p.work.is_success()
    future = p.work.get_future()
    assert future is p.work.get_future() and future.value() == ["t"]
    assert p.future.done() and p.future.value() == ["t"]


def test_a_failure_is_raised_by_the_hold_and_then_by_wait():
    daemon, released = Daemon(error=RuntimeError("ranks [1] never arrived")), []
    p = posted(daemon, released)
    with pytest.raises(CollectiveTimeoutError, match=r"ranks \[1\] never arrived"):
        p.settle_hold()
    with pytest.raises(CollectiveTimeoutError):
        p.work.wait()
    assert released == []  # the hold is dropped by whoever got the failure


def test_a_daemon_that_never_answers_is_a_timeout_not_a_hang():
    p = posted(Daemon(waits=10**9), [], deadline_s=0.05)
    with pytest.raises(CollectiveTimeoutError, match="no outcome within"):
        p.settle_hold()


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
            completer.submit(posted(d, []))
        assert daemons[0].polls == 3  # settled by the third submit
        assert daemons[1].polls == daemons[2].polls == 0
    finally:
        completer.stop()
