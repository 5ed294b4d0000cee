"""`kpt metrics`: every adapter's devices as Prometheus metrics, named after NVIDIA's DCGM exporter.

Each scrape asks every adapter now (health, memory, utilization), as dcgm-exporter reads DCGM
per scrape: ``DCGM_FI_DEV_<FIELD>`` there is ``KPT_DEV_<FIELD>`` here, labelled with adapter,
device and vendor, so a dashboard built for dcgm-exporter needs a relabel, not a rewrite. Needs
the ``metrics`` extra (prometheus_client). The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kpt.hal._discovery import Registry
from kpt.hal._health import check_device
from kpt.hal._types import Device, HealthReport, HealthState

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the optional extra: MetricsExporter says how to install it
    CollectorRegistry = None  # type: ignore[assignment,misc]

MIB = 1 << 20
LABELS = ("adapter", "device", "vendor")
# What the adapters' health readings may carry, as dcgm-exporter names them.
_READING_GAUGES = (
    ("temperature_c", "KPT_DEV_GPU_TEMP", "Device temperature (in C)."),
    ("power_w", "KPT_DEV_POWER_USAGE", "Power draw (in W)."),
    ("ecc_uncorrectable", "KPT_DEV_ECC_DBE_VOL_TOTAL", "Uncorrectable (double-bit) ECC errors."),
)


class DeviceCollector:
    """A prometheus_client collector: each ``collect()`` checks every device of ``registry``.

    Utilization is the busy fraction of the clock since the previous scrape, from the
    ``busy_s``/``clock_s`` readings an adapter gives (the simulator does); the first scrape
    covers the whole time since the device started. A ``gpu_util`` reading (percent) is used
    as it is.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()  # scrapes run on the server's threads, maybe at once
        self._busy_marks: dict[Device, tuple[float, float]] = {}  # (busy_s, clock_s)

    def describe(self) -> list:
        return []  # no fixed set: families depend on what the adapters report

    def collect(self) -> Iterator[Any]:
        with self._lock:
            started = time.perf_counter()
            families = _Families()
            for device in self.registry.devices():
                self._collect_device(device, families)
            families.gauge(
                "KPT_EXPORTER_SCRAPE_SECONDS", "Time this scrape took to ask every adapter.", ()
            ).add_metric([], time.perf_counter() - started)
            yield from families.all()

    def _collect_device(self, device: Device, families: _Families) -> None:
        report = check_device(self.registry, device)
        self.registry.record_health(device, report)  # select() in this process sees it too
        labels = [device.adapter, device.name, device.capabilities.vendor]
        state_family = families.gauge(
            "KPT_DEV_HEALTH_STATE",
            "1 for the device's health state (healthy, degraded, failed), 0 for the others.",
            (*LABELS, "state"),
        )
        for state in HealthState:
            state_family.add_metric([*labels, state.value], float(report.state == state))
        memory = self._memory(device, report)
        if memory is not None:
            free, total = memory
            for name, text, value in (
                ("KPT_DEV_FB_TOTAL", "Device memory total (in MiB).", total),
                ("KPT_DEV_FB_FREE", "Device memory free (in MiB).", free),
                ("KPT_DEV_FB_USED", "Device memory used (in MiB).", total - free),
            ):
                families.gauge(name, text, LABELS).add_metric(labels, value / MIB)
        utilization = self._utilization(device, report)
        if utilization is not None:
            families.gauge("KPT_DEV_GPU_UTIL", "Device utilization (in %).", LABELS).add_metric(
                labels, utilization
            )
        for key, name, text in _READING_GAUGES:
            if key in report.readings:
                families.gauge(name, text, LABELS).add_metric(labels, report.readings[key])

    def _memory(self, device: Device, report: HealthReport) -> tuple[float, float] | None:
        readings = report.readings
        if "memory_free" in readings and "memory_total" in readings:
            return readings["memory_free"], readings["memory_total"]
        if report.state == HealthState.FAILED:
            return None  # asking a failed device again would only fail (or hang) again
        try:
            free, total = self.registry.adapter(device.adapter).memory_info(device.index)
        except Exception:  # an adapter without a memory query: leave the series out
            return None
        return float(free), float(total)

    def _utilization(self, device: Device, report: HealthReport) -> float | None:
        readings = report.readings
        if "gpu_util" in readings:
            return float(readings["gpu_util"])
        if "busy_s" not in readings or "clock_s" not in readings:
            return None
        busy, clock = readings["busy_s"], readings["clock_s"]
        last_busy, last_clock = self._busy_marks.get(device, (0.0, 0.0))
        if clock < last_clock:  # the clock went back: a restarted daemon; start over
            last_busy, last_clock = 0.0, 0.0
        self._busy_marks[device] = (busy, clock)
        if clock <= last_clock:
            return 0.0
        return 100.0 * min(1.0, max(0.0, (busy - last_busy) / (clock - last_clock)))


class _Families:
    """The metric families of one scrape, made on first use, yielded in a stable order."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily] = {}

    def gauge(self, name: str, text: str, labels: tuple[str, ...]) -> GaugeMetricFamily:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = GaugeMetricFamily(name, text, labels=list(labels))
        return family

    def all(self) -> list[GaugeMetricFamily]:
        return [self._families[name] for name in sorted(self._families)]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape on stderr helps nobody


class MetricsExporter:
    """Serves ``/metrics`` for every device of ``registry`` on ``host:port`` (0: any free port).

    ``start()`` binds and serves on a background thread; ``close()`` stops it. Use ``with``.
    """

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 0) -> None:
        if CollectorRegistry is None:
            raise ImportError(
                "the metrics exporter needs prometheus_client: pip install 'kpt-hal[metrics]'"
            )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port {port!r} must be an int in [0, 65535] (0: any free port)")
        self.host, self.port = host, port
        self.collector = DeviceCollector(registry)
        self._metrics_registry = CollectorRegistry(auto_describe=False)
        self._metrics_registry.register(self.collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the exporter is not started; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._server.server_port}/metrics"

    def start(self) -> MetricsExporter:
        try:
            server = make_server(
                self.host, self.port, make_wsgi_app(self._metrics_registry),
                server_class=_ThreadingServerV6 if ":" in self.host else _ThreadingServer,
                handler_class=_QuietHandler,
            )  # fmt: skip
        except OSError as exc:
            raise OSError(
                f"kpt metrics cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                "pick another --port (0 takes any free one) or --host"
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="kpt-metrics", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # waits for serve_forever to return
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> MetricsExporter:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape: a slow adapter must not hold up the next scraper's connect."""

    daemon_threads = True


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6
