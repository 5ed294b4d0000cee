"""start_daemon(): a real daemon process shared by client processes, and never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from kpt.sim import DeviceLostError, SimClient, start_daemon
from kpt.sim._daemon_process import DaemonStartError


def _run(code: str, *args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_two_client_processes_share_devices_memory_and_clock():
    with start_daemon(profile="test-asic", devices=2) as daemon:
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent("""
                import sys, numpy as np
                from kpt.sim import SimClient, TensorRef
                c = SimClient(sys.argv[1])
                b = c.alloc(1, 1 << 20)
                c.write(b, 0, np.arange(4, dtype=np.float32))
                print(b, flush=True)
                sys.stdin.readline()  # hold the memory until told to go
                c.close()
            """), daemon.endpoint],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            buffer = int(holder.stdout.readline())
            out = _run(
                """
                import sys
                from kpt.sim import SimClient, InvalidRequestError
                c = SimClient(sys.argv[1])
                print(c.memory_stats(1)["allocated"])
                try:
                    c.read(int(sys.argv[2]), 0, 4)
                except InvalidRequestError as e:
                    print("refused:", e)
                print(len(c.devices()), c.synchronize())
                """,
                daemon.endpoint,
                str(buffer),
            )
            allocated, refused, summary = out.strip().splitlines()
            assert int(allocated) >= 1 << 20
            assert "belongs to another client" in refused
            assert summary.split()[0] == "2"
            with SimClient(daemon.endpoint) as mine:
                assert mine.now() >= float(summary.split()[1])  # one clock for all
        finally:
            holder.stdin.close()
            holder.wait(10)
        with SimClient(daemon.endpoint) as mine:
            assert mine.memory_stats(1)["allocated"] == 0  # the holder's close freed it


def test_stop_ends_the_process_and_removes_its_tmp_dir():
    daemon = start_daemon(profile="test-asic")
    assert daemon.alive() and daemon.workdir.exists()
    daemon.stop()
    assert daemon.process.returncode == 0
    assert not daemon.workdir.exists()
    daemon.stop()  # idempotent


def test_daemon_exits_when_its_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import time
            from kpt.sim import start_daemon
            d = start_daemon(profile="test-asic")
            print(d.pid, d.workdir, flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pid, workdir = parent.stdout.readline().split()
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finalizers: only the child can act
        parent.wait(10)
        assert _gone(int(pid), within=5), "daemon outlived its parent"
        assert not os.path.exists(workdir), "the orphaned daemon left its tmp dir behind"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


def test_a_killed_daemon_raises_device_lost_promptly():
    daemon = start_daemon(profile="test-asic")
    try:
        c = SimClient(daemon.endpoint, heartbeat_interval=0.2, timeout=30)
        c.write(c.alloc(0, 16), 0, np.zeros(4, np.float32))
        daemon.process.kill()
        daemon.process.wait(5)
        started = time.monotonic()
        with pytest.raises(DeviceLostError, match=r"unreachable|exited"):
            c.synchronize()
        assert time.monotonic() - started < 3.0  # ~3 heartbeat intervals, never the 30 s timeout
        c._wire.close()
    finally:
        daemon.stop()


def test_bad_profile_fails_start_with_the_daemons_reason():
    with pytest.raises(DaemonStartError, match="profile 'h900' not found"):
        start_daemon(profile="h900")


def test_a_daemon_started_from_a_thread_outlives_that_thread():
    import threading

    handles = []
    starter = threading.Thread(target=lambda: handles.append(start_daemon(profile="test-asic")))
    starter.start()
    starter.join(60)
    daemon = handles[0]
    try:
        time.sleep(0.5)  # a parent-death signal tied to the thread would have fired by now
        with SimClient(daemon.endpoint) as c:
            assert len(c.devices()) == 1
    finally:
        daemon.stop()


def test_a_local_daemon_is_watched_so_long_heartbeats_still_notice_its_death():
    daemon = start_daemon(profile="test-asic")
    try:
        c = SimClient(daemon.endpoint)  # local: long heartbeat, pid watched
        assert c.heartbeat_interval >= 10
        c.write(c.alloc(0, 16), 0, np.zeros(4, np.float32))
        daemon.process.kill()  # our child: a zombie until reaped, which must count as dead
        started = time.monotonic()
        with pytest.raises(DeviceLostError, match=f"pid {daemon.pid}"):
            c.synchronize()
        assert time.monotonic() - started < 2.0  # not the 30 s heartbeat window
        c.close()
    finally:
        daemon.stop()
