"""Spin-then-block: spins only while it pays, backs off when it does not."""

import time

import pytest

from kpt.wire import _spin
from kpt.wire._spin import Spinner, spin_window_s


def test_a_message_that_comes_during_the_window_is_caught():
    polls = []
    spinner = Spinner(window_s=0.05)
    assert spinner.spin(lambda: polls.append(1) or len(polls) >= 3)
    assert len(polls) == 3


def test_a_spin_that_runs_out_turns_spinning_off_for_more_waits_each_time():
    spinner = Spinner(window_s=0.001)
    calls = []

    def never() -> bool:
        calls.append(1)
        return False

    skipped = []
    for _ in range(12):
        before = len(calls)
        assert not spinner.spin(never)
        skipped.append(len(calls) == before)
    # spin, skip 1, spin, skip 2, spin, skip 4, spin, ...
    assert skipped == [False, True, False, True, True, False, True, True, True, True, False, True]


def test_one_caught_message_turns_spinning_back_on():
    spinner = Spinner(window_s=0.001)
    assert not spinner.spin(lambda: False)  # fails: the next wait skips
    assert not spinner.spin(lambda: True)  # skipped, ready() not even asked
    assert spinner.spin(lambda: True)  # caught: back off reset
    calls = []
    assert not spinner.spin(lambda: calls.append(1) or False)
    assert calls  # spun again at once, not after a longer back-off


def test_a_preempted_spin_stops_early():
    spinner = Spinner(window_s=10.0)  # a window that would never run out in this test
    started = time.perf_counter()

    def descheduled() -> bool:
        time.sleep(0.001)  # a gap between polls, as when another thread takes the CPU
        return False

    assert not spinner.spin(descheduled)
    assert time.perf_counter() - started < 1.0


def test_window_from_the_environment(monkeypatch):
    monkeypatch.setenv("KPT_WIRE_SPIN_US", "0")
    assert spin_window_s() == 0.0 and not Spinner().spin(lambda: pytest.fail("spun"))
    monkeypatch.setenv("KPT_WIRE_SPIN_US", "150")
    monkeypatch.setattr(_spin.os, "cpu_count", lambda: 4)
    assert spin_window_s() == pytest.approx(150e-6)
    monkeypatch.setattr(_spin.os, "cpu_count", lambda: 1)  # one CPU: the peer needs it
    assert spin_window_s() == 0.0
    monkeypatch.setattr(_spin.os, "cpu_count", lambda: 4)
    monkeypatch.setenv("KPT_WIRE_SPIN_US", "fast")
    with pytest.raises(ValueError, match="KPT_WIRE_SPIN_US='fast'"):
        spin_window_s()
