import threading

import pytest

import kpt.hal as hal
from kpt.hal import HealthMonitor, HealthReport, HealthState


@pytest.fixture
def setup(empty_registry, fake_adapter):
    adapter = fake_adapter("gpu", device_type="cuda", count=2)
    empty_registry.register(adapter)
    return empty_registry, adapter


def test_poll_reports_changes_to_subscribers(setup):
    registry, adapter = setup
    monitor = HealthMonitor(registry, interval=60)
    seen = []
    monitor.subscribe(lambda device, old, new: seen.append((device.name, old.state, new.state)))
    assert monitor.poll_once() == []  # nothing changed since discovery
    adapter.states[1] = HealthReport(HealthState.FAILED, "fell off the bus")
    changes = monitor.poll_once()
    assert [(d.name, n.state) for d, _, n in changes] == [("cuda:1", HealthState.FAILED)]
    assert seen == [("cuda:1", HealthState.HEALTHY, HealthState.FAILED)]
    assert monitor.state(registry.device("cuda:1")).reason == "fell off the bus"
    assert monitor.poll_once() == []  # same state again: no new notification


def test_failed_device_leaves_selection(setup):
    registry, adapter = setup
    monitor = HealthMonitor(registry, interval=60)
    adapter.states[0] = HealthReport(HealthState.FAILED, "xid 79")
    adapter.states[1] = HealthReport(HealthState.FAILED, "xid 79")
    monitor.poll_once()
    assert registry.select().name == "cpu:0"
    assert [d.name for d in registry.usable_devices()] == ["cpu:0"]


def test_health_raising_counts_as_failed(setup):
    registry, adapter = setup

    def broken(index):
        raise RuntimeError("nvml timeout")

    registry.devices()  # discovered while healthy
    adapter.health = broken
    changes = HealthMonitor(registry, interval=60).poll_once()
    assert {n.state for _, _, n in changes} == {HealthState.FAILED}
    assert "nvml timeout" in changes[0][2].reason


def test_background_thread_notices_and_stops(setup):
    registry, adapter = setup
    failed = threading.Event()
    monitor = HealthMonitor(registry, interval=0.01)

    def on_change(device, old, new):
        if new.state == HealthState.DEGRADED:
            failed.set()

    def bad_subscriber(device, old, new):
        raise ValueError("subscriber bug")

    monitor.subscribe(bad_subscriber)  # must not stop the others
    monitor.subscribe(on_change)
    with monitor:
        assert monitor.running
        adapter.states[0] = HealthReport(HealthState.DEGRADED, "92 C")
        assert failed.wait(5), "monitor did not report the degraded device"
    assert not monitor.running


def test_unsubscribe(setup):
    registry, adapter = setup
    monitor = HealthMonitor(registry, interval=60)
    seen = []
    unsubscribe = monitor.subscribe(lambda *change: seen.append(change))
    unsubscribe()
    adapter.states[0] = HealthReport(HealthState.FAILED, "gone")
    monitor.poll_once()
    assert seen == []


def test_bad_interval_and_state_are_explained(setup):
    registry, _ = setup
    with pytest.raises(ValueError, match="interval"):
        HealthMonitor(registry, interval=0)
    with pytest.raises(ValueError, match="'sick'"):
        HealthReport("sick")
    assert HealthReport("degraded").state is HealthState.DEGRADED
    assert hal.HealthMonitor().registry is hal.registry()
