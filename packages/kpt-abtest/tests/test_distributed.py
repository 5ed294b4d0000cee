"""Distributed evaluation with real worker processes talking kpt-wire to an aggregator."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kpt.wire", reason="kpt-wire is the optional 'distributed' extra")

from kpt.abtest._cli import main
from kpt.abtest._distributed import (
    Aggregator,
    Reporter,
    evaluate_distributed,
    launch_workers,
    resolve_task,
)
from kpt.abtest._monitor import fetch_status, monitor, render_status
from kpt.abtest._summary import Summary

HERE = Path(__file__).parent
# Worker processes import their task from this file by name: put this folder on their path.
# Worker processes import numpy, scipy and kpt-wire cold: on a loaded 2-core CI host that alone
# took 15-25 s each, so three of them at once need far more than a quiet machine does.
WORKER_TIMEOUT_S = 240
WORKER_ENV = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
TASK = "test_distributed:latency_shard"


def latency_shard(shard, shards, reporter, n=2000, effect=0.0, seed=0):
    """A worker's task: deterministic per shard, so the merged result is known exactly."""
    rng = np.random.default_rng([seed, shard])
    reporter.observe("a", rng.normal(10.0, 1.0, n))
    reporter.observe("b", rng.normal(10.0 + effect, 1.0, n))


def failing_shard(shard, shards, reporter):
    reporter.observe("a", [1.0, 2.0])
    if shard == 1:
        raise RuntimeError("disk full on shard 1")


def _expected(n, effect, seed, shards):
    a, b = [], []
    for shard in range(shards):
        rng = np.random.default_rng([seed, shard])
        a.append(rng.normal(10.0, 1.0, n))
        b.append(rng.normal(10.0 + effect, 1.0, n))
    return np.concatenate(a), np.concatenate(b)


@pytest.mark.timeout(WORKER_TIMEOUT_S + 60)
def test_workers_stream_summaries_that_merge_to_the_exact_moments():
    options = {"n": 1500, "effect": -0.5, "seed": 4}
    status = evaluate_distributed(
        TASK, 3, options=options, env=WORKER_ENV, timeout=WORKER_TIMEOUT_S
    )
    a, b = _expected(1500, -0.5, 4, 3)
    assert status["arms"]["a"]["n"] == a.size and status["arms"]["b"]["n"] == b.size
    assert status["arms"]["b"]["mean"] == pytest.approx(b.mean(), rel=1e-12)
    assert status["arms"]["b"]["sd"] == pytest.approx(b.std(ddof=1), rel=1e-9)
    # quantiles within the KLL sketch's rank error (1.65% at k=200): compare by rank
    p95 = status["arms"]["a"]["p95"]
    assert abs(np.mean(a <= p95) - 0.95) < 0.0165
    comparison = status["comparisons"]["b"]
    assert comparison["effect"] == pytest.approx(b.mean() - a.mean(), rel=1e-9)
    low, high = comparison["ci"]
    fixed_low, fixed_high = comparison["fixed_ci"]
    assert low < fixed_low < fixed_high < high  # anytime-valid is wider than Welch
    assert comparison["decision"] == "b_better" and status["decision"] == "b_better"
    assert all(w["done"] and w["error"] is None for w in status["workers"].values())
    assert set(status["workers"]) == {"w0", "w1", "w2"}


def test_no_effect_keeps_the_decision_open():
    with Aggregator() as aggregator:
        from kpt.wire import Client

        with Client(aggregator.endpoint) as client:
            reporter = Reporter(client, "local", flush_every=200)
            for shard in range(3):
                latency_shard(shard, 3, reporter, n=500)
            reporter.flush()
            client.call("done", {"worker": "local"})  # all casts before it are merged
        status = aggregator.snapshot()
    assert status["arms"]["a"]["n"] == 1500
    assert status["decision"] == "continue"
    low, high = status["comparisons"]["b"]["ci"]
    assert low < 0 < high


@pytest.mark.timeout(WORKER_TIMEOUT_S + 60)
def test_a_failing_worker_is_reported_with_its_reason():
    with pytest.raises(RuntimeError, match="disk full on shard 1"):
        evaluate_distributed(
            "test_distributed:failing_shard", 2, env=WORKER_ENV, timeout=WORKER_TIMEOUT_S
        )


@pytest.mark.timeout(WORKER_TIMEOUT_S + 60)
def test_unknown_task_fails_the_worker_clearly():
    with pytest.raises(RuntimeError, match="cannot be loaded"):
        evaluate_distributed("no_such_module:task", 1, timeout=WORKER_TIMEOUT_S)


def test_worker_pool_kills_processes_that_overrun():
    with Aggregator() as aggregator:
        options = {"n": 10, "effect": 0.0}
        with launch_workers(
            aggregator.endpoint, "test_distributed:sleepy_shard", 1, options=options,
            env=WORKER_ENV,
        ) as pool:  # fmt: skip
            assert pool.wait(timeout=1.0) == [-9]
            assert pool.processes[0].poll() is not None


def sleepy_shard(shard, shards, reporter, **_):
    import time

    time.sleep(60)


class _RecordingClient:
    def __init__(self):
        self.casts = []

    def cast(self, type, header):
        self.casts.append((type, header))


def test_reporter_batches_values_into_summaries():
    client = _RecordingClient()
    reporter = Reporter(client, "w", flush_every=100, flush_interval_s=None)  # count only
    for _ in range(5):
        reporter.observe("a", np.ones(30))
    assert len(client.casts) == 1  # 120 values crossed 100 once
    reporter.flush()
    sizes = [Summary.from_dict(h["summary"]).n for _, h in client.casts]
    assert sizes == [120, 30]
    json.dumps({"n": sizes})  # headers are plain msgpack types, never pickled objects


def test_monitor_shows_arms_intervals_and_decision():
    with Aggregator(baseline="a") as aggregator:
        from kpt.wire import Client

        with Client(aggregator.endpoint) as client:
            reporter = Reporter(client, "local", flush_every=10_000)
            rng = np.random.default_rng(1)
            reporter.observe("a", rng.normal(5, 1, 3000))
            reporter.observe("b", rng.normal(4, 1, 3000))
            reporter.flush()
            client.call("done", {"worker": "local"})
        out = io.StringIO()
        assert monitor(aggregator.endpoint, once=True, out=out) == 0
        text = out.getvalue()
        assert "decision: b_better" in text
        assert "a *" in text and "3000" in text
        assert "workers: 1 seen, 1 done" in text
        assert fetch_status(aggregator.endpoint)["arms"]["b"]["n"] == 3000
        lines = io.StringIO()
        monitor(aggregator.endpoint, interval=0.01, as_json=True, out=lines, max_updates=2)
        assert len(lines.getvalue().splitlines()) == 2


def test_monitor_cli_explains_an_absent_aggregator(tmp_path, capsys):
    endpoint = f"ipc://{tmp_path}/nobody.sock"
    assert main(["monitor", endpoint, "--once", "--interval", "0.2"]) == 2
    assert "no aggregator answers" in capsys.readouterr().err


def test_render_status_before_any_data():
    text = render_status({"arms": {}, "decision": "waiting"})
    assert "no summaries yet" in text and "decision: waiting" in text


def test_aggregator_refuses_bad_summaries():
    from kpt.wire import Client, RemoteError

    with Aggregator() as aggregator, Client(aggregator.endpoint) as client:
        with pytest.raises(RemoteError, match="non-empty str"):
            client.call("summary", {"worker": "x", "seq": 1, "summary": {}})
        with pytest.raises(RemoteError, match="unreadable"):
            client.call("summary", {"worker": "x", "seq": 2, "arm": "a", "summary": {"n": 1}})
        with pytest.raises(RemoteError, match="'seq' is None"):
            client.call("summary", {"worker": "x", "arm": "a", "summary": {}})
        status = aggregator.snapshot()
        assert status["summaries_received"] == 0 and status["summaries_refused"] == 3


@pytest.mark.parametrize("spec", ["nocolon", "json:nope", "json:__doc__"])
def test_bad_task_specs_are_explained(spec):
    with pytest.raises(ValueError, match="task"):
        resolve_task(spec)


@pytest.mark.timeout(WORKER_TIMEOUT_S + 60)
def test_cli_run_with_a_distributed_config(tmp_path, capsys, monkeypatch):
    for name, value in WORKER_ENV.items():
        monkeypatch.setenv(name, value)  # launch_workers passes the environment on
    config = tmp_path / "dist.json"
    config.write_text(
        json.dumps(
            {
                "task": TASK,
                "workers": 2,
                "options": {"n": 300},
                "baseline": "a",
                "timeout": WORKER_TIMEOUT_S,
            }
        )
    )
    out = tmp_path / "dist.json.out.json"
    md = tmp_path / "dist.md"
    assert main(["run", str(config), "--out", str(out), "--out", str(md)]) == 0
    printed = capsys.readouterr().out
    assert "kpt-abtest monitor tcp://127.0.0.1:" in printed
    assert "# Distributed evaluation" in printed
    assert json.loads(out.read_text())["arms"]["a"]["n"] == 600
    assert "| b | 600 |" in md.read_text()


def test_cli_run_refuses_unknown_distributed_keys(tmp_path, capsys):
    config = tmp_path / "dist.json"
    config.write_text(json.dumps({"task": TASK, "wrokers": 2}))
    assert main(["run", str(config)]) == 2
    assert "unknown keys ['wrokers']" in capsys.readouterr().err
