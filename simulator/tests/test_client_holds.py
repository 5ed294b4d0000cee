"""SimClient's holds: buffers a posted collective will still write, settled before use."""

from __future__ import annotations

import _thread
import threading

import pytest

from kpt.sim._client_holds import Holds


class Op:
    """A stand-in for a posted collective: settle() records the order, may fail."""

    def __init__(self, name: str, log: list, error: Exception | None = None) -> None:
        self.name, self.log, self.error = name, log, error

    def settle(self) -> None:
        self.log.append(self.name)
        if self.error is not None:
            raise self.error


def test_touching_settles_the_holds_on_those_buffers_oldest_first_and_releases_them():
    holds, log = Holds(), []
    holds.add([1, 2], Op("a", log).settle, "g")
    holds.add([3], Op("b", log).settle, "g")
    holds.add([2], Op("c", log).settle, "g")
    assert holds
    holds.touching([2, 9])
    assert log == ["a", "c"]
    holds.touching([2])
    assert log == ["a", "c"]  # released: settled once
    holds.all()
    assert log == ["a", "c", "b"] and not holds


def test_a_hold_on_several_of_the_buffers_touched_is_settled_once():
    holds, log = Holds(), []
    holds.add([1, 2], Op("a", log).settle, "g")
    holds.add([2], Op("b", log).settle, "h")
    holds.touching([2, 1], group="other")
    assert log == ["a", "b"] and not holds


def test_a_post_of_the_same_group_does_not_settle_its_holds():
    holds, log = Holds(), []
    holds.add([1], Op("a", log).settle, "g")
    holds.touching([1], group="g")  # the daemon runs one group's collectives in order
    assert log == [] and holds
    holds.touching([1], group="other")
    assert log == ["a"]


def test_a_failure_is_raised_once_to_the_caller_that_settles_it():
    holds, log = Holds(), []
    holds.add([1], Op("a", log, RuntimeError("rank 1 never arrived")).settle, "g")
    with pytest.raises(RuntimeError, match="rank 1 never arrived"):
        holds.touching([1])
    holds.touching([1])  # delivered: nothing held any more
    assert not holds


def test_a_failure_found_on_a_thread_torch_runs_in_cpp_is_raised_on_the_next_python_call():
    """An exception inside autograd's C++ device threads aborts the process: it waits."""
    holds, log = Holds(), []
    holds.add([1], Op("a", log, RuntimeError("rank 1's process disconnected")).settle, "g")
    done = threading.Event()

    def foreign() -> None:  # a thread the threading module did not start, as torch's are
        assert isinstance(threading.current_thread(), threading._DummyThread)
        holds.touching([1])  # must not raise here
        done.set()

    _thread.start_new_thread(foreign, ())
    assert done.wait(10)
    assert log == ["a"] and holds  # the failure is kept
    with pytest.raises(RuntimeError, match="disconnected"):
        holds.touching([7])  # any call on a Python thread: the group is broken
    assert not holds
