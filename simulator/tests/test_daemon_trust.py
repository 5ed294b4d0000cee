"""A daemon many processes share keeps each client's memory, errors and rights its own (issue 10).

Each test reproduces one defect found on the shared daemon and asserts the CUDA-like promise.
"""

from __future__ import annotations

import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from device_arrays import download, upload

from kpt.sim import (
    AccessDeniedError,
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    LinkDownError,
    MemoryFaultError,
    OutOfMemoryError,
    SimClient,
    Simulator,
    start_daemon,
)
from kpt.sim._daemon import SimDaemon
from kpt.sim._daemon_host import HostMemory
from kpt.sim._daemon_liveness import process_state
from kpt.sim._daemon_process import READY_PREFIX
from kpt.sim._daemon_thread import serve_in_thread
from kpt.sim._numpy_executor import NumpyExecutor
from kpt.wire import Client, RemoteError, Server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def shared():
    """(owner, stranger, endpoint): two clients of one in-thread daemon; one holds the token."""
    with serve_in_thread("test-asic", 2) as (endpoint, daemon):
        owner = SimClient(endpoint, timeout=30, admin_token=daemon.admin_token)
        stranger = SimClient(endpoint, timeout=30)
        try:
            yield owner, stranger, endpoint
        finally:
            stranger.close()
            owner.close()


# -- 1. new memory never shows another client's bytes ----------------------------------------------
def test_a_new_buffer_reads_zeros_after_another_client_freed_the_same_memory(shared):
    owner, stranger, _ = shared
    secret = np.arange(1, 4097, dtype=np.float32)
    ref = upload(owner, 0, secret)
    owner.synchronize()
    owner.free(ref.buffer)
    owner.synchronize()
    fresh = stranger.alloc(0, secret.nbytes)
    assert not stranger.read(fresh, 0, secret.nbytes).any()


# -- 2. only the owner may act on everyone ---------------------------------------------------------
def test_a_stranger_cannot_reset_inject_faults_or_read_every_trace(shared, tmp_path):
    owner, stranger, _ = shared
    kept = upload(owner, 0, np.ones(16, np.float32))
    assert owner.admin and not stranger.admin
    for attempt in (
        stranger.reset,
        lambda: stranger.inject_fault("device_lost", device=0),
        lambda: stranger.dump_trace(tmp_path / "trace.json"),
        lambda: stranger.record_ops(True),
        lambda: stranger.dump_ops(tmp_path / "ops.json"),
    ):
        with pytest.raises(AccessDeniedError, match="only its owner"):
            attempt()
    np.testing.assert_array_equal(download(owner, kept), np.ones(16))  # nothing was freed
    owner.synchronize(0)  # and no fault was injected
    owner.dump_trace(tmp_path / "trace.json")  # the owner may
    assert (tmp_path / "trace.json").stat().st_size > 0


def test_a_wrong_token_is_refused_and_allow_admin_opens_admin_to_everyone():
    with (
        serve_in_thread("test-asic", 1) as (endpoint, _),
        SimClient(endpoint, admin_token="x" * 64) as guesser,
        pytest.raises(AccessDeniedError),
    ):
        guesser.reset()
    with (
        start_daemon("test-asic", extra_args=("--allow-admin",)) as daemon,
        SimClient(daemon.endpoint) as anyone,
    ):
        assert anyone.admin
        anyone.reset()


def test_kpt_sim_serve_defaults_to_a_private_unix_socket_and_a_private_token_file():
    process = subprocess.Popen(
        [sys.executable, "-m", "kpt.sim", "serve", "--profile", "test-asic"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith(READY_PREFIX), line + process.stderr.read()
        endpoint = line[len(READY_PREFIX) :].strip()
        assert endpoint.startswith("unix://")
        socket_path = Path(endpoint[len("unix://") :])
        folder = socket_path.parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        token_file = folder / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with SimClient(endpoint, admin_token=token_file.read_text().strip()) as owner:
            assert owner.admin
        with SimClient(endpoint) as other:
            assert not other.admin
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
        process.stderr.close()
    assert not folder.exists()  # the private folder goes with the daemon


def test_curve_keys_let_a_client_with_the_daemons_public_key_in_and_keep_others_out(tmp_path):
    from kpt.wire import generate_keys

    public, _ = generate_keys(tmp_path, "daemon")
    daemon = start_daemon(
        "test-asic", endpoint="tcp://127.0.0.1:0",
        extra_args=("--curve-keys", str(tmp_path / "daemon.key_secret")),
    )  # fmt: skip
    try:
        with SimClient(daemon.endpoint, curve_server_key=public) as c:
            assert c.devices()[0]["index"] == 0
        started = time.monotonic()
        with pytest.raises(DeviceLostError, match="no simulator daemon answers"):
            SimClient(daemon.endpoint)  # no key: the handshake never completes
        assert time.monotonic() - started < 10
    finally:
        daemon.stop()


# -- 3. a live client is never forgotten -----------------------------------------------------------
def test_a_silent_unix_client_keeps_its_memory_while_its_connection_stands():
    with serve_in_thread("test-asic", 1, heartbeat_interval=0.1) as (endpoint, daemon):
        quiet = Client(endpoint, heartbeat_interval=60)  # silent far past 3 daemon intervals
        buffer = quiet.call("alloc", {"device": 0, "nbytes": 4096}).header["buffer"]
        time.sleep(1.0)
        with SimClient(endpoint, admin_token=daemon.admin_token) as owner:
            assert owner.memory_stats(0)["allocated"] >= 4096
        assert quiet.call("read", {"buffer": buffer, "offset": 0, "nbytes": 4}).arrays
        quiet.close()


def test_a_zeromq_server_with_a_handler_thread_answers_heartbeats_while_it_computes():
    gone: list[bytes] = []
    server = Server(
        "tcp://127.0.0.1:0", heartbeat_interval=0.2, on_client_gone=gone.append,
        handler_thread=True,
    )  # fmt: skip
    server.register("slow", lambda msg, client: time.sleep(1.5) or {"done": True})
    server.register("ping", lambda msg, client: {})
    with server:
        idle = Client(server.endpoint, heartbeat_interval=0.2)
        busy = Client(server.endpoint, heartbeat_interval=0.2, timeout=30)  # 0.6 s window
        idle.call("ping", {})
        assert busy.call("slow", {}).header["done"]  # heard all along: no "server dead"
        assert idle.client_id not in gone
        idle.close()
        busy.close()


def test_a_remote_client_waits_out_a_long_batch_on_a_tcp_daemon():
    with (
        start_daemon("test-asic", endpoint="tcp://127.0.0.1:0") as daemon,
        SimClient(daemon.endpoint, heartbeat_interval=0.2, timeout=60) as c,
    ):
        x = upload(c, 0, np.ones((1000, 1000), np.float32))
        for _ in range(60):  # about a second of numpy on the daemon: 5 heartbeat windows
            c.launch(0, "softmax", [x], [x])
        c.synchronize()
        assert download(c, x).shape == (1000, 1000)


def test_a_long_handler_does_not_make_the_zeromq_server_forget_its_other_clients():
    gone: list[bytes] = []
    server = Server("tcp://127.0.0.1:0", heartbeat_interval=0.2, on_client_gone=gone.append)
    server.register("slow", lambda msg, client: time.sleep(1.5) or {})
    server.register("ping", lambda msg, client: {})
    with server:
        idle = Client(server.endpoint, heartbeat_interval=0.2)
        busy = Client(server.endpoint, heartbeat_interval=10, timeout=30)
        idle.call("ping", {})
        busy.call("slow", {})
        time.sleep(0.3)
        assert idle.client_id not in gone
        idle.close()
        busy.close()


def test_a_stopped_daemon_is_a_hang_naming_the_call_and_keeps_memory_after_it_resumes():
    with start_daemon("test-asic") as daemon, SimClient(daemon.endpoint, timeout=30) as c:
        ref = upload(c, 0, np.arange(256, dtype=np.float32))
        c.synchronize()
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            _wait_for_state(daemon.pid, "T")  # kill() returns before the process has stopped
            c.timeout = 2.0
            with pytest.raises(DeviceHangError, match=r"'synchronize'.*stopped.*memory is kept"):
                c.synchronize()
            time.sleep(4.0)  # stopped for longer than the daemon's liveness window
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        c.timeout = 30
        np.testing.assert_array_equal(download(c, ref), np.arange(256))


def _wait_for_state(pid: int, state: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while process_state(pid) != state:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {state}"
        time.sleep(0.01)


# -- 4. errors belong to the client that caused them -----------------------------------------------
def test_a_memory_error_in_one_clients_buffer_is_raised_to_that_client_only(shared):
    owner, stranger, _ = shared
    victim = upload(stranger, 0, np.ones(64, np.float32))
    stranger.synchronize()
    owner.inject_fault("memory_error", device=0, buffer=victim.buffer)
    stranger.launch(0, "add", [victim, victim], [victim])
    bystander = upload(owner, 0, np.ones(4, np.float32))
    owner.launch(0, "add", [bystander, bystander], [bystander])
    owner.synchronize()  # the owner's own work is fine: not the stranger's error
    with pytest.raises(MemoryFaultError, match=f"buffer {victim.buffer}"):
        stranger.synchronize()
    np.testing.assert_array_equal(download(owner, bystander), np.full(4, 2.0))


def test_a_copy_over_a_downed_link_moves_no_bytes_and_fails_its_own_client(shared):
    owner, stranger, _ = shared
    src = upload(stranger, 0, np.full(32, 7.0, np.float32))
    dst = upload(stranger, 1, np.zeros(32, np.float32))
    stranger.synchronize()
    owner.inject_fault("link_down", link=[0, 1])
    stranger.copy(src, dst)
    owner.synchronize()
    with pytest.raises(LinkDownError):
        stranger.synchronize()
    assert not download(stranger, dst).any()  # the bytes never crossed
    stranger.synchronize()  # the error was raised once


def test_out_of_memory_on_a_shared_daemon_is_raised_by_the_allocation(shared):
    owner, stranger, _ = shared
    total = owner.memory_stats(0)["total"]
    hog = owner.alloc(0, total - (1 << 20))  # another process takes nearly all of it
    with pytest.raises(OutOfMemoryError) as info:
        stranger.alloc_async(0, 8 << 20)
    assert info.value.requested == 8 << 20
    stranger.synchronize()  # nothing pending: the error was the allocation's
    owner.free(hog)
    owner.synchronize()  # the free is queued like a launch until then
    assert stranger.alloc_async(0, 8 << 20) < 0


# -- 5. a failed host allocation gives the device memory back --------------------------------------
class _HostlessExecutor(NumpyExecutor):
    def allocate(self, nbytes: int):
        raise RuntimeError("simulated: the host cannot back this")


def _serve(daemon: SimDaemon):
    folder = tempfile.mkdtemp(prefix="kpt-sim-test-")
    server = Server(f"unix://{folder}/d.sock", on_client_gone=daemon.client_gone)
    daemon.register(server)
    return server.start()


def test_a_host_that_cannot_back_an_allocation_gives_an_oom_and_keeps_the_device_memory():
    daemon = SimDaemon(Simulator("test-asic", 1), _HostlessExecutor())
    with _serve(daemon) as server, SimClient(server.endpoint) as c:
        with pytest.raises(OutOfMemoryError, match="host could not back"):
            c.alloc(0, 1 << 20)
        assert c.memory_stats(0)["allocated"] == 0


def test_host_memory_is_bounded_in_total_and_released_with_the_buffer():
    daemon = SimDaemon(Simulator("test-asic", 1), NumpyExecutor(), host_memory=HostMemory(4 << 20))
    with _serve(daemon) as server, SimClient(server.endpoint) as c:
        kept = c.alloc(0, 3 << 20)
        with pytest.raises(OutOfMemoryError, match="host-memory-gib"):
            c.alloc(0, 2 << 20)
        assert c.memory_stats(0)["allocated"] == 3 << 20
        c.free(kept)
        c.synchronize()
        c.free(c.alloc(0, 4 << 20))


# -- 6. sizes are checked before anything is spent -------------------------------------------------
def test_a_timing_only_read_costs_the_daemon_no_host_memory_and_huge_reads_are_refused():
    with serve_in_thread("h100-sxm", 1, numerics=False) as (endpoint, _):
        raw = Client(endpoint, timeout=30)
        buffer = raw.call("alloc", {"device": 0, "nbytes": 8 << 30}).header["buffer"]
        reply = raw.call("read", {"buffer": buffer, "offset": 0, "nbytes": 1 << 28})
        assert reply.header["zeros"] == 1 << 28 and not reply.arrays  # nothing was made
        with pytest.raises(RemoteError, match="read in chunks"):
            raw.call("read", {"buffer": buffer, "offset": 0, "nbytes": 4 << 30})
        raw.close()
        with SimClient(endpoint) as c:
            assert c.read(c.alloc(0, 1 << 20), 0, 1 << 20).shape == (1 << 20,)


# -- 7. faults cannot break the shared clock -------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "straggler", "device": 0, "factor": math.inf},
        {"kind": "straggler", "device": 0, "factor": 1e9},
        {"kind": "thermal_throttle", "device": 0, "factor": 1e-300},
        {"kind": "link_degraded", "link": [0, 1], "factor": 0.0},
        {"kind": "hang", "device": True},
        {"kind": "straggler", "device": 0, "factor": 2.0, "duration_us": math.nan},
    ],
)
def test_absurd_fault_parameters_are_refused_and_the_clock_stays_sane(shared, spec):
    owner, _, _ = shared
    spec = dict(spec)
    with pytest.raises(InvalidRequestError):
        owner.inject_fault(spec.pop("kind"), **spec)
    x = upload(owner, 0, np.ones(1024, np.float32))
    owner.launch(0, "add", [x, x], [x])
    assert math.isfinite(owner.synchronize())


# -- 10. a wrong endpoint fails fast and says what to do -------------------------------------------
@pytest.mark.parametrize("endpoint", ["unix:///nonexistent/kpt-sim.sock", "tcp://127.0.0.1:9"])
def test_a_bad_endpoint_fails_within_seconds_naming_it(endpoint):
    started = time.monotonic()
    with pytest.raises(DeviceLostError, match="KPT_SIM_ENDPOINT") as info:
        SimClient(endpoint)
    assert time.monotonic() - started < 5
    assert endpoint in str(info.value)


# -- 9. the daemon reports each device's health for kpt.hal's checks -------------------------------
def test_devices_report_the_health_that_injected_faults_leave(shared):
    owner, stranger, _ = shared
    assert [d["health"]["state"] for d in stranger.devices()] == ["ok", "ok"]
    owner.inject_fault("straggler", device=1, factor=3.0)
    owner.inject_fault("device_lost", device=0)
    health = [d["health"] for d in stranger.devices()]
    assert [h["state"] for h in health] == ["lost", "degraded"]
    assert "3x slower" in health[1]["reason"]


def test_an_injected_hang_shows_as_hung():
    with (
        serve_in_thread("test-asic", 1) as (endpoint, daemon),
        SimClient(endpoint, admin_token=daemon.admin_token) as owner,
    ):
        owner.inject_fault("hang", device=0)
        assert owner.devices()[0]["health"]["state"] == "hung"
