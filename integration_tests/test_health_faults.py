"""Health sees the simulator's own faults (issue 10, defect 9): after device_lost, hang or a
straggler is injected into a daemon, `kpt devices`, `hal.health()`, `hal.select()` and the
`kpt metrics` exporter all say so. Before the fix every device stayed "healthy" and select()
picked the hung one. The daemon is started here, so this process owns it and may inject."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from kpt.sim import SimClient, start_daemon

CALL_S = 120  # bound on each child process: a loaded CI machine, not a hang


@pytest.fixture
def owned_daemon() -> Iterator:
    daemon = start_daemon(devices=3, executor="numpy", numerics=False)
    try:
        yield daemon
    finally:
        daemon.stop()


def _env(daemon) -> dict[str, str]:
    return {**os.environ, "KPT_SIM_ENDPOINT": daemon.endpoint, "KPT_ADAPTERS": "sim,cpu"}


def _inject(daemon, kind: str, **spec) -> None:
    with SimClient(daemon.endpoint, admin_token=daemon.admin_token) as client:
        client.inject_fault(kind, **spec)


def _run(daemon, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], env=_env(daemon), capture_output=True, text=True, timeout=CALL_S
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kpt_devices_and_select_see_lost_hung_and_straggling_devices(owned_daemon):
    _inject(owned_daemon, "device_lost", device=0)
    _inject(owned_daemon, "hang", device=1)
    _inject(owned_daemon, "straggler", device=2, factor=5.0)
    records = json.loads(_run(owned_daemon, "-m", "kpt.hal", "devices", "--json"))
    health = {r["torch_device"]: r["health"] for r in records}
    assert (
        health["kpt_sim:0"]["state"] == "failed" and "device_lost" in health["kpt_sim:0"]["reason"]
    )
    assert health["kpt_sim:1"]["state"] == "failed" and health["kpt_sim:1"]["reason"].startswith(
        "hung"
    )
    assert (
        health["kpt_sim:2"]["state"] == "degraded" and "5x slower" in health["kpt_sim:2"]["reason"]
    )
    text = _run(owned_daemon, "-m", "kpt.hal", "devices")
    assert "failed: hung: hang at t=" in text and "failed: lost: device_lost" in text
    # The straggler is still usable (ranked below healthy ones); lost and hung never are.
    picks = _run(owned_daemon, "-c", (
        "import kpt.hal as hal\n"
        "print(hal.select().name)\n"
        "print(hal.select(healthy=True).name)\n"
    )).split()  # fmt: skip
    assert picks == ["kpt_sim:2", "cpu:0"]


def test_hal_health_and_select_follow_a_fault_injected_after_discovery(owned_daemon):
    script = """
import os
import kpt.hal as hal
from kpt.sim import SimClient

client = SimClient(os.environ["KPT_SIM_ENDPOINT"], admin_token=os.environ["TOKEN"])
print(hal.select(adapter="sim").name)  # all healthy at discovery
client.inject_fault("hang", device=0)
report = hal.health("kpt_sim:0")
print(report.state.value, report.reason.split(":")[0])
print(hal.select(adapter="sim").name)
client.inject_fault("device_lost", device=1)
client.inject_fault("device_lost", device=2)
states = {d.name: r.state.value for d, r in hal.health().items()}
print(states["kpt_sim:1"], states["kpt_sim:2"], states["cpu:0"])
try:
    hal.select(adapter="sim")
except hal.NoDeviceError as error:
    print("refused", "hung" in str(error), "device_lost" in str(error))
client.close()
"""
    env = {**_env(owned_daemon), "TOKEN": owned_daemon.admin_token}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=CALL_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "kpt_sim:0",
        "failed hung",
        "kpt_sim:1",
        "failed failed healthy",
        "refused True True",
    ]


def test_kpt_metrics_exports_a_hung_simulated_device_over_loopback(owned_daemon):
    parser = pytest.importorskip("prometheus_client.parser", reason="kpt-hal[metrics]")
    _inject(owned_daemon, "hang", device=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "kpt.hal", "metrics", "--port", "0", "--host", "127.0.0.1"],
        env=_env(owned_daemon), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert " on http://127.0.0.1:" in line, line + process.stderr.read()
        url = line.split(" on ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=CALL_S) as response:
            text = response.read().decode()
    finally:
        process.terminate()
        process.wait(CALL_S)
        process.stdout.close()
        process.stderr.close()
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            samples[(sample.name, labels.get("device"), labels.get("state"))] = sample.value
            assert sample.name.startswith(("KPT_DEV_", "KPT_EXPORTER_")), sample.name
            if sample.name.startswith("KPT_DEV_"):
                assert {"adapter", "device", "vendor"} <= set(labels)
    assert samples[("KPT_DEV_HEALTH_STATE", "kpt_sim:1", "failed")] == 1.0
    assert samples[("KPT_DEV_HEALTH_STATE", "kpt_sim:0", "healthy")] == 1.0
    assert samples[("KPT_DEV_FB_TOTAL", "kpt_sim:0", None)] == 80 * 1024  # h100-sxm: 80 GiB
    assert 0.0 <= samples[("KPT_DEV_GPU_UTIL", "kpt_sim:0", None)] <= 100.0
    assert ("KPT_DEV_HEALTH_STATE", "cpu:0", "healthy") in samples
