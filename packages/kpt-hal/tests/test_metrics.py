"""`kpt metrics`: the Prometheus exporter, scraped over loopback (issue 10, defect 9)."""

import os
import subprocess
import sys
import urllib.request

import pytest

import kpt.hal as hal
from kpt.hal import HealthReport, HealthState
from kpt.hal._cli import main
from kpt.hal._metrics import MetricsExporter

prometheus = pytest.importorskip("prometheus_client", reason="the metrics extra")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _labels(device: str, adapter: str = "gpu", vendor: str = "fakevendor", **extra) -> tuple:
    return tuple(sorted({"adapter": adapter, "device": device, "vendor": vendor, **extra}.items()))


def test_scrape_shows_health_memory_and_utilization_per_device(empty_registry, fake_adapter):
    adapter = fake_adapter("gpu", count=2, memory=16 * 2**30)
    empty_registry.register(adapter)
    adapter.states[0] = HealthReport.healthy(
        memory_free=12 * 2**30, memory_total=16 * 2**30, busy_s=1.0, clock_s=4.0
    )
    adapter.states[1] = HealthReport(HealthState.FAILED, "hung: hang at t=3 us")
    with MetricsExporter(empty_registry, "127.0.0.1", 0) as exporter:
        assert exporter.url.startswith("http://127.0.0.1:")
        first = _scrape(exporter.url)
        adapter.states[0] = HealthReport.healthy(
            memory_free=8 * 2**30, memory_total=16 * 2**30, busy_s=4.0, clock_s=8.0
        )
        second = _scrape(exporter.url)
    state = "KPT_DEV_HEALTH_STATE"
    assert first[(state, _labels("cuda:0", state="healthy"))] == 1.0
    assert first[(state, _labels("cuda:0", state="failed"))] == 0.0
    assert first[(state, _labels("cuda:1", state="failed"))] == 1.0
    assert first[(state, _labels("cuda:1", state="healthy"))] == 0.0
    assert first[(state, _labels("cpu:0", adapter="cpu", vendor=_cpu_vendor(empty_registry),
                                 state="healthy"))] == 1.0  # fmt: skip
    assert first[("KPT_DEV_FB_TOTAL", _labels("cuda:0"))] == 16 * 1024
    assert first[("KPT_DEV_FB_FREE", _labels("cuda:0"))] == 12 * 1024
    assert second[("KPT_DEV_FB_USED", _labels("cuda:0"))] == 8 * 1024
    assert first[("KPT_DEV_GPU_UTIL", _labels("cuda:0"))] == 25.0  # 1 s busy of 4
    assert second[("KPT_DEV_GPU_UTIL", _labels("cuda:0"))] == 75.0  # 3 s busy of the next 4
    # A failed device without readings is not asked for memory again: its series are left out.
    assert ("KPT_DEV_FB_FREE", _labels("cuda:1")) not in first
    # The exporter's check is recorded: select() in its process avoids the failed device.
    assert empty_registry.health(empty_registry.device("cuda:1")).state == HealthState.FAILED
    assert empty_registry.select().name == "cuda:0"


def _cpu_vendor(registry) -> str:
    return registry.device("cpu").capabilities.vendor


def test_a_closed_exporter_frees_its_port(empty_registry):
    exporter = MetricsExporter(empty_registry, "127.0.0.1", 0).start()
    url = exporter.url
    exporter.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    with pytest.raises(ValueError, match="port"):
        MetricsExporter(empty_registry, "127.0.0.1", 70000)


def test_kpt_metrics_serves_until_terminated():
    process = subprocess.Popen(
        [sys.executable, "-m", "kpt.hal", "metrics", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, hal.ALLOW_LIST_ENV: "cpu"},
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert "kpt metrics: 1 device(s) of adapter(s) cpu on http://127.0.0.1:" in line, (
            line + process.stderr.read()
        )
        url = line.split(" on ")[1].split()[0]
        samples = _scrape(url)
        cpu = [labels for name, labels in samples if name == "KPT_DEV_HEALTH_STATE"]
        assert ("device", "cpu:0") in cpu[0] and ("adapter", "cpu") in cpu[0]
        device_labels = tuple(item for item in cpu[0] if item[0] != "state")
        assert samples[("KPT_DEV_FB_TOTAL", device_labels)] > 0  # the host's memory
    finally:
        process.terminate()
        assert process.wait(30) == 0  # SIGTERM stops it cleanly
        process.stdout.close()
        process.stderr.close()


def test_kpt_metrics_explains_a_port_in_use(empty_registry, capsys):
    with MetricsExporter(empty_registry, "127.0.0.1", 0) as exporter:
        port = int(exporter.url.rsplit(":", 1)[1].split("/")[0])
        assert main(["metrics", "--port", str(port)], registry=empty_registry) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_hal_health_checks_now_and_select_follows(monkeypatch, fake_adapter):
    registry = hal.registry()
    adapter = fake_adapter("gpuh", device_type="cuda", count=2)
    monkeypatch.delenv(hal.ALLOW_LIST_ENV, raising=False)
    hal.register_adapter(adapter)
    try:
        assert hal.select(adapter="gpuh").name == "cuda:0"
        adapter.states[0] = HealthReport(HealthState.FAILED, "lost: device_lost at t=1 us")
        assert hal.select(adapter="gpuh").name == "cuda:0"  # nobody asked since discovery
        report = hal.health("cuda:0")
        assert report.state == HealthState.FAILED and "device_lost" in report.reason
        everything = hal.health()
        assert everything[hal.device("cuda:1")].state == HealthState.HEALTHY
        assert hal.select(adapter="gpuh").name == "cuda:1"  # the failed one is skipped now
        assert registry.health(hal.device("cuda:0")).reason.startswith("lost")
    finally:
        hal.unregister_adapter("gpuh")
        hal.refresh()


def test_kpt_devices_prints_why_a_device_is_unwell(empty_registry, fake_adapter, capsys):
    adapter = fake_adapter("gpu", count=1)
    adapter.states[0] = HealthReport(HealthState.FAILED, "hung: hang at t=2.000 us")
    empty_registry.register(adapter)
    main(["devices"], registry=empty_registry)
    text = capsys.readouterr().out
    assert "failed: hung: hang at t=2.000 us" in text
    assert "picks cpu:0" in text
