"""Failover with real worker processes: a worker SIGKILLed mid-request loses no request, and
greedy requests finish with the tokens an uninterrupted run gives (through the router, and
over HTTP through `kpt-serve fleet`); the autoscaler adds and removes real workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from conftest import make_gpt2, random_prompts
from fleet_helpers import assert_gone, start_server, stop_server

from kpt.serve import LLM, SamplingParams

fleet_module = pytest.importorskip("kpt.serve.fleet")
Fleet, WorkerSpec = fleet_module.Fleet, fleet_module.WorkerSpec

pytestmark = pytest.mark.timeout(240)

HEARTBEAT_S = 0.5  # the silent-worker test: short, to measure detection
STEADY_HEARTBEAT_S = 1.0  # elsewhere: a loaded CI machine must not starve a worker into "dead"
MAX_TOKENS = 120
GREEDY_BODY = {"max_tokens": MAX_TOKENS, "temperature": 0.0, "ignore_eos": True}


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


def test_a_worker_killed_under_streaming_http_clients_loses_no_request(model_dir):
    httpx = pytest.importorskip("httpx")
    parser = pytest.importorskip("prometheus_client.parser")
    prompts = random_prompts(6, 4, 30, seed=9)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    expected = [
        o.token_ids
        for o in LLM(model_dir, device="cpu", num_kv_blocks=128).generate(prompts, params)
    ]
    # One seat per worker: each worker runs its three requests one after another, so when the
    # first token arrives anywhere, every worker still holds requests it cannot have finished.
    process, url = start_server(
        ["fleet", str(model_dir), "--workers", "cpu,cpu", "--model-name", "m", "--threads", "1",
         "--num-kv-blocks", "128", "--max-num-seqs", "1", "--policy", "round_robin"]
    )  # fmt: skip
    pids = []
    try:
        with httpx.Client(base_url=url, timeout=180) as client:
            pids = [w["pid"] for w in client.get("/v1/fleet").json()["workers"]]
            results: list[list[int] | str] = [[] for _ in prompts]
            streaming = threading.Event()

            def stream(i):
                body = {"model": "m", "prompt": prompts[i], "stream": True, **GREEDY_BODY}
                with client.stream("POST", "/v1/completions", json=body) as reply:
                    for line in reply.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            results[i] = f"error: {chunk['error']}"
                            return
                        for choice in chunk["choices"]:
                            results[i].extend(choice.get("token_ids") or [])
                        if results[i]:
                            streaming.set()

            threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(prompts))]
            for thread in threads:
                thread.start()
            assert streaming.wait(120), "no stream sent a token within 120s"
            workers = client.get("/v1/fleet").json()["workers"]
            victim = max(workers, key=lambda w: w["load"]["inflight"])
            os.kill(victim["pid"], signal.SIGSTOP)  # frozen: what it holds now, it keeps
            try:
                workers = {w["id"]: w for w in client.get("/v1/fleet").json()["workers"]}
                entry = workers.get(victim["id"])  # None: already removed as silent
                held = entry["load"]["inflight"] if entry else None
                assert held is None or held > 0, workers
            finally:
                os.kill(victim["pid"], signal.SIGKILL)
            for thread in threads:
                thread.join(180)
                assert not thread.is_alive(), "a stream never ended after the kill"
            assert results == expected
            fleet_view = client.get("/v1/fleet").json()
            assert victim["id"] not in {w["id"] for w in fleet_view["workers"]}
            assert fleet_view["failovers"] >= (held or 1)
            text = client.get("/metrics").text
            families = {f.name: f for f in parser.text_string_to_metric_families(text)}
            moved = sum(s.value for s in families["kpt_serve_failovers"].samples
                        if s.name.endswith("_total"))  # fmt: skip
            assert moved == fleet_view["failovers"]
    finally:
        stop_server(process, pids)


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
    # The test ticks the autoscaler itself, at moments it chose, with the times it chose: no
    # background thread racing the requests, no sleep standing in for "idle for long enough".
    spec = WorkerSpec(
        model="m", model_dir=str(model_dir), threads=1, num_kv_blocks=64, max_num_seqs=2
    )
    policy = fleet_module.ScalingPolicy(
        min_workers=1, max_workers=2, target_queue=1, idle_s=5.0, cooldown_s=5.0
    )
    fleet = Fleet(
        [spec], heartbeat_s=STEADY_HEARTBEAT_S, autoscale=policy, autoscale_interval_s=None
    )
    seen = set()
    try:
        fleet.start()
        fleet.wait_ready(timeout=180)
        scaler = fleet.autoscaler
        assert scaler.tick() == 0, "an idle fleet at its minimum must hold"
        params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
        done = threading.Semaphore(0)
        prompts = random_prompts(16, 4, 20, seed=4)
        requests = [
            fleet.router.submit("m", p, params, lambda d: d.finished and done.release())
            for p in prompts
        ]
        # Two seats on the one worker: the router knows at once that fourteen requests wait,
        # over the target of one per worker.
        assert fleet.router.queue_depth("m") >= 14
        assert scaler.tick() == 1 and len(fleet.processes()) == 2
        seen.update(p.pid for p in fleet.processes())
        assert scaler.tick() == 0, "a second worker within the cool-down"
        fleet.wait_ready(timeout=180, count=2)  # the new worker loads and registers
        for _ in requests:
            assert done.acquire(timeout=180)
        wrong = [(r.error, len(r.token_ids), r.workers_tried) for r in requests]
        wrong = [w for w in wrong if w[0] is not None or w[1] != 200]
        assert not wrong, (wrong, scaler.events)
        # Nothing in flight; past the cool-down and the idle window, one worker goes.
        later = time.monotonic() + policy.idle_s + policy.cooldown_s + 1
        assert scaler.tick(now=later) == -1
        assert len(fleet.processes()) == 1 and len(fleet.router.workers()) == 1
        assert scaler.tick(now=later + 2 * policy.cooldown_s) == 0, "never below min_workers"
        assert [change for _, change, _ in scaler.events] == [1, -1]
    finally:
        fleet.close()
    assert_gone(seen)
