"""What one `kpt metrics` scrape costs next to asking the adapters directly, in the same run.

Baseline: a loop calling each device's adapter.health() (the readings the exporter turns into
metrics), in process. Measured: one HTTP GET of /metrics over loopback from the exporter
(health of every device, memory, utilization, rendered in Prometheus text). Rows for 16 fake
devices, and for a 4-device kpt-sim daemon when kpt-sim and kpt-adapter-sim are installed
(each health check is then a round trip to the daemon).

    python packages/kpt-hal/benchmarks/bench_metrics.py [--scrapes 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
import urllib.request

import kpt.hal as hal
from kpt.hal._metrics import MetricsExporter


class Board(hal.Adapter):
    """16 fake accelerators whose health carries memory and busy-time readings."""

    name = "bench"
    device_type = "cuda"

    def probe(self):
        return hal.Probe.found(16)

    def capabilities(self, index):
        return hal.Capabilities(vendor="bench", model="B1", index=index,
                                memory_total=80 << 30, memory_free=80 << 30)  # fmt: skip

    def health(self, index):
        return hal.HealthReport.healthy(
            memory_free=float(40 << 30), memory_total=float(80 << 30), busy_s=1.0, clock_s=2.0
        )

    def collectives_backend(self):
        return None

    def triton_target(self):
        return None


def median_ms(fn, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def measure(registry: hal.Registry, count: int) -> tuple[float, float, int]:
    devices = registry.devices()

    def direct() -> None:
        for device in devices:
            registry.adapter(device.adapter).health(device.index)

    with MetricsExporter(registry, "127.0.0.1", 0) as exporter:
        url = exporter.url

        def scrape() -> None:
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()

        scrape()  # warm: the first scrape sets utilization marks
        return median_ms(direct, count), median_ms(scrape, count), len(devices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    rows = []
    fake = hal.Registry(entry_points=[])
    fake.register(Board())
    rows.append(("16 fake devices + cpu", *measure(fake, args.scrapes)))
    if importlib.util.find_spec("kpt.adapters.sim") and importlib.util.find_spec("kpt.sim"):
        from kpt.sim import start_daemon

        daemon = start_daemon(devices=4, numerics=False)
        os.environ["KPT_SIM_ENDPOINT"] = daemon.endpoint
        os.environ[hal.ALLOW_LIST_ENV] = "sim,cpu"
        try:
            rows.append(("4 kpt-sim devices + cpu", *measure(hal.Registry(), args.scrapes // 4)))
        finally:
            daemon.stop()
    print("kpt metrics: one scrape vs asking every adapter's health() directly (median)")
    print(f"{'devices':<26}{'direct ms':>11}{'scrape ms':>11}{'ratio':>8}")
    for name, direct, scrape, _count in rows:
        print(f"{name:<26}{direct:>11.3f}{scrape:>11.3f}{scrape / direct:>7.1f}x")


if __name__ == "__main__":
    main()
