"""evaluate_distributed(executor="ray"): the same workers as Ray tasks on a local Ray.

Skipped when Ray (the optional 'ray' extra) is not installed. The summaries still travel over
kpt-wire; a task gets only a plain config (checked in test_executors.py).
"""

import os
import time

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is the optional 'ray' extra")
pytest.importorskip("kpt.wire", reason="kpt-wire is the optional 'distributed' extra")

import ray
from test_distributed import TASK, WORKER_ENV, WORKER_TIMEOUT_S, _expected

from kpt.abtest import evaluate_distributed
from kpt.abtest._ray_workers import RayExecutor

# Ray starts its own processes (GCS, raylet, workers) that import numpy, scipy and kpt-wire cold.
RAY_TIMEOUT_S = WORKER_TIMEOUT_S


@pytest.fixture(scope="module")
def local_ray():
    # address="local": a Ray of its own, never a cluster someone started on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.mark.timeout(RAY_TIMEOUT_S + 120)
def test_ray_tasks_stream_summaries_that_merge_to_the_exact_moments(local_ray):
    # curve=True, as a run across nodes needs: the tasks hold the worker key pair it made.
    options = {"n": 800, "effect": -0.5, "seed": 4}
    status = evaluate_distributed(
        TASK, 2, options=options, env=WORKER_ENV, timeout=RAY_TIMEOUT_S, executor="ray",
        curve=True,
    )  # fmt: skip
    a, b = _expected(800, -0.5, 4, 2)
    assert status["arms"]["a"]["n"] == a.size and status["arms"]["b"]["n"] == b.size
    assert status["arms"]["b"]["mean"] == pytest.approx(b.mean(), rel=1e-12)
    assert status["arms"]["b"]["sd"] == pytest.approx(b.std(ddof=1), rel=1e-9)
    assert status["comparisons"]["b"]["decision"] == "b_better"
    assert set(status["workers"]) == {"ray-w0", "ray-w1"}
    assert all(w["done"] and w["error"] is None for w in status["workers"].values())
    assert ray.is_initialized()  # a Ray the caller started is left running


@pytest.mark.timeout(RAY_TIMEOUT_S + 120)
def test_a_failing_ray_task_is_reported_with_its_reason(local_ray):
    with pytest.raises(RuntimeError, match=r"(?s)worker 1: Ray task failed.*disk full on shard 1"):
        evaluate_distributed(
            "test_distributed:failing_shard", 2, env=WORKER_ENV, timeout=RAY_TIMEOUT_S,
            executor="ray",
        )  # fmt: skip


@pytest.mark.timeout(RAY_TIMEOUT_S + 120)
def test_a_ray_task_past_the_timeout_is_cancelled(local_ray):
    started = time.monotonic()
    executor = RayExecutor(env={**WORKER_ENV, "KPT_TEST_SLEEP_S": "600"})
    with pytest.raises(RuntimeError, match=r"still running at the .* timeout; cancelled"):
        evaluate_distributed("test_ray_executor:sleeping_shard", 1, timeout=20, executor=executor)
    assert time.monotonic() - started < RAY_TIMEOUT_S


def sleeping_shard(shard, shards, reporter):
    reporter.observe("a", np.ones(3))
    time.sleep(float(os.environ.get("KPT_TEST_SLEEP_S", "0")))
