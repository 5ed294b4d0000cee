"""Device health: checked now (check_health, behind hal.health()) or polled on an interval by a
HealthMonitor that tells subscribers when a device changes state. Every check is recorded in the
registry, so select() stops choosing a failed device at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from kpt.hal._discovery import Registry
from kpt.hal._types import Device, HealthReport, HealthState

logger = logging.getLogger("kpt.hal.health")

# Called as subscriber(device, previous_report, new_report) when the state changes.
Subscriber = Callable[[Device, HealthReport | None, HealthReport], None]


def check_device(registry: Registry, device: Device) -> HealthReport:
    """Ask `device`'s adapter now; an adapter that cannot answer means a failed device."""
    try:
        return registry.adapter(device.adapter).health(device.index)
    except Exception as exc:
        return HealthReport(HealthState.FAILED, f"health() raised {exc!r}")


def check_health(
    registry: Registry, devices: Iterable[Device] | None = None
) -> dict[Device, HealthReport]:
    """Check `devices` (default: every discovered one) now and record each report, so that
    select() and `kpt devices` see what the adapters say at this moment."""
    reports = {}
    for device in registry.devices() if devices is None else devices:
        report = check_device(registry, device)
        registry.record_health(device, report)
        reports[device] = report
    return reports


class HealthMonitor:
    """Polls every discovered device's adapter.health() from a background thread.

    Reports land in the registry, so select() stops choosing failed devices at once.
    Use as a context manager, or call start() / stop(); poll_once() runs one round inline.
    """

    def __init__(self, registry: Registry | None = None, *, interval: float = 5.0) -> None:
        if not interval > 0:
            raise ValueError(f"interval={interval!r} must be a positive number of seconds")
        if registry is None:
            import kpt.hal

            registry = kpt.hal.registry()
        self.registry = registry
        self.interval = interval
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[Device, HealthReport] = {}  # what subscribers were last told

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` on every state change; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def state(self, device: Device) -> HealthReport:
        return self.registry.health(device)

    def poll_once(self) -> list[tuple[Device, HealthReport | None, HealthReport]]:
        """Check every device now; returns the (device, previous, new) state changes."""
        changes = []
        for device in self.registry.devices():
            report = self._check(device)
            previous = self.registry.record_health(device, report)
            seen = self._seen.get(device)
            self._seen[device] = report
            # First sight: only a device that is already unwell is news.
            if seen is None and report.state != HealthState.HEALTHY:
                changes.append((device, previous, report))
            elif seen is not None and seen.state != report.state:
                changes.append((device, seen, report))
        for change in changes:
            self._notify(*change)
        return changes

    def _check(self, device: Device) -> HealthReport:
        return check_device(self.registry, device)

    def _notify(self, device: Device, previous: HealthReport | None, new: HealthReport) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(device, previous, new)
            except Exception:  # one bad subscriber must not silence the others
                logger.exception("health subscriber %r raised for %s", subscriber, device.name)

    # ---- background thread --------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> HealthMonitor:
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kpt-hal-health", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"health monitor thread did not stop within {timeout} s")
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                logger.exception("health poll failed; retrying in %.3g s", self.interval)
            self._stop.wait(self.interval)

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
