"""Failover with real worker processes: a worker SIGKILLed mid-request loses no request, and
greedy requests finish with the tokens an uninterrupted run gives."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import make_gpt2, random_prompts
from fleet_helpers import assert_gone

from kpt.serve import LLM, SamplingParams

fleet_module = pytest.importorskip("kpt.serve.fleet")
Fleet, WorkerSpec = fleet_module.Fleet, fleet_module.WorkerSpec

pytestmark = pytest.mark.timeout(240)

HEARTBEAT_S = 0.5  # the silent-worker test: short, to measure detection
STEADY_HEARTBEAT_S = 1.0  # elsewhere: a loaded CI machine must not starve a worker into "dead"
MAX_TOKENS = 120


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("failover") / "m", layers=1, width=32)


def test_a_worker_killed_mid_request_loses_no_request(model_dir):
    prompts = random_prompts(8, 4, 30, seed=3)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    expected = [
        o.token_ids
        for o in LLM(model_dir, device="cpu", num_kv_blocks=128).generate(prompts, params)
    ]

    spec = WorkerSpec(model="m", model_dir=str(model_dir), threads=1, num_kv_blocks=128)
    fleet = Fleet([spec, spec], heartbeat_s=STEADY_HEARTBEAT_S, policy="round_robin")
    pids = []
    try:
        fleet.start()
        fleet.wait_ready(timeout=180)
        pids = [p.pid for p in fleet.processes()]
        streaming = threading.Event()
        done = threading.Semaphore(0)

        def on_delta(delta):
            if delta.new_token_ids:
                streaming.set()
            if delta.finished:
                done.release()

        requests = [fleet.router.submit("m", p, params, on_delta) for p in prompts]
        assert streaming.wait(60), "no token streamed within 60s"
        # The victim: the worker holding the most unfinished requests right now.
        victim = max(fleet.router.workers(), key=lambda w: len(w.inflight))
        moved = [r for r in requests if r.worker_id == victim.worker_id and not r.finished]
        assert moved, "every request finished before the kill; nothing to fail over"
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for _ in requests:
            assert done.acquire(timeout=120), "a request never finished after the kill"

        assert all(r.error is None for r in requests), [r.error for r in requests]
        assert [r.token_ids for r in requests] == expected
        for request in moved:
            assert request.workers_tried[0] == victim.worker_id and len(request.workers_tried) == 2
        assert fleet.router.num_failovers >= len(moved)
        assert victim.worker_id not in {w.worker_id for w in fleet.router.workers()}
        # A dead process is noticed at once (its exit), well within three heartbeats.
        assert time.monotonic() - killed_at < 120
    finally:
        fleet.close()
    assert_gone(pids)


def test_a_silent_worker_is_removed_within_three_heartbeats(model_dir):
    # A router that is not told the worker's process (router.watch): only heartbeats count.
    router = fleet_module.Router(heartbeat_s=HEARTBEAT_S).start()
    launcher = fleet_module.LocalLauncher(router.inbox_endpoint, HEARTBEAT_S)
    spec = WorkerSpec(model="m", model_dir=str(model_dir), threads=1, num_kv_blocks=32)
    gone = threading.Event()
    router.on_worker_gone.append(lambda worker, reason: gone.set())
    process = launcher.start(spec)
    try:
        deadline = time.monotonic() + 180
        while not router.workers() and time.monotonic() < deadline and process.alive():
            time.sleep(0.05)
        assert router.workers(), "the worker did not register within 180s"
        os.kill(process.pid, signal.SIGSTOP)  # alive but silent, as a hung host
        stopped_at = time.monotonic()
        assert gone.wait(30)
        waited = time.monotonic() - stopped_at
        # Three missed heartbeats, plus the monitor's half-interval tick and a loaded CI's slack.
        assert waited < 3 * HEARTBEAT_S + 3.0, f"removed after {waited:.1f}s"
        assert router.workers() == []
    finally:
        os.kill(process.pid, signal.SIGCONT)
        router.close()
        launcher.close()
    assert_gone([process.pid])


def test_the_autoscaler_adds_a_worker_under_load_and_removes_it_when_idle(model_dir):
    spec = WorkerSpec(
        model="m", model_dir=str(model_dir), threads=1, num_kv_blocks=64, max_num_seqs=2
    )
    policy = fleet_module.ScalingPolicy(
        min_workers=1, max_workers=2, target_queue=1, idle_s=1.0, cooldown_s=1.0
    )
    fleet = Fleet([spec], heartbeat_s=STEADY_HEARTBEAT_S, autoscale=policy)
    seen = set()
    try:
        fleet.start()
        fleet.wait_ready(timeout=180)
        seen.update(p.pid for p in fleet.processes())
        params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
        done = threading.Semaphore(0)
        prompts = random_prompts(16, 4, 20, seed=4)
        requests = [
            fleet.router.submit("m", p, params, lambda d: d.finished and done.release())
            for p in prompts
        ]
        # Two seats per worker: fourteen requests wait, over the target of one per worker.
        deadline = time.monotonic() + 60
        while len(fleet.processes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fleet.processes()) == 2, f"no worker added: {fleet.autoscaler.events}"
        seen.update(p.pid for p in fleet.processes())
        for _ in requests:
            assert done.acquire(timeout=180)
        wrong = [(r.error, len(r.token_ids), r.workers_tried) for r in requests]
        wrong = [w for w in wrong if w[0] is not None or w[1] != 200]
        assert not wrong, (wrong, fleet.autoscaler.events)
        deadline = time.monotonic() + 240  # the new worker loads, then both idle a second
        while (len(fleet.processes()) > 1 or not fleet.autoscaler.events[-1][1] < 0) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        events = fleet.autoscaler.events
        assert [change for _, change, _ in events] == [1, -1], (events, fleet.router.num_failovers)
        assert len(fleet.processes()) == 1 and len(fleet.router.workers()) == 1
    finally:
        fleet.close()
    assert_gone(seen)
