"""RayLauncher on a local Ray: workers are Ray actors, requests still travel over kpt.wire.

A tiny fleet answers with the tokens the engine gives locally; a worker killed is seen gone by
the router and replaced through Ray (the autoscaler's minimum); an actor killed takes its worker
process with it; a worker no node can hold fails at once, or after the placement timeout,
naming the resources it asked for; nothing outlives close(). Skipped when Ray (the optional
'ray' extra) is not installed.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

import pytest
from conftest import make_gpt2, random_prompts
from fleet_helpers import assert_gone, start_server, stop_server

from kpt.serve import LLM, SamplingParams

ray = pytest.importorskip("ray", reason="Ray is the optional 'ray' extra")
fleet_module = pytest.importorskip("kpt.serve.fleet")
from kpt.serve.fleet import (  # noqa: E402
    Fleet,
    RayLauncher,
    ScalingPolicy,
    WorkerSpec,
    WorkerStartError,
)
from kpt.serve.fleet._ray_launcher import RayWorker, actor_spec, ray_options  # noqa: E402

pytestmark = pytest.mark.timeout(240)

PARAMS = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def local_ray():
    # address="local": a Ray of its own, never a cluster someone started on this machine; no
    # GPUs even where there are some, so that what a node offers is what the tests say.
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ray-fleet") / "m", layers=1, width=32)


def _generate(fleet, prompts):
    done = threading.Semaphore(0)
    requests = [
        fleet.router.submit("m", p, PARAMS, lambda d: d.finished and done.release())
        for p in prompts
    ]
    for _ in requests:
        assert done.acquire(timeout=60), "a request did not finish within 60s"
    assert all(r.error is None for r in requests), [r.error for r in requests]
    return [r.token_ids for r in requests]


def test_each_device_asks_ray_for_its_resources():
    def spec(**fields):
        return WorkerSpec(model="m", model_dir="models/m", **fields)

    assert ray_options(spec()) == {"num_cpus": 1}
    assert ray_options(spec(threads=4)) == {"num_cpus": 4}
    assert ray_options(spec(device="cuda:3")) == {"num_cpus": 1, "num_gpus": 1}
    assert ray_options(spec(device="kpt_sim:0"))["resources"] == {"kpt_sim": 1}
    sim = ray_options(spec(device="kpt_sim:1", profile="mi300x"))
    assert sim == {"num_cpus": 1, "resources": {"kpt_sim:mi300x": 1}}
    with pytest.raises(ValueError, match="device 'xpu:0' has no Ray resource"):
        ray_options(spec(device="xpu:0"))
    # Ray picks the GPU and leaves only it visible; folders must not depend on a cwd.
    placed = actor_spec(spec(device="cuda:3", extra_models={"b": "models/b"}))
    assert placed.device == "cuda:0"
    assert placed.model_dir == os.path.abspath("models/m")
    assert placed.extra_models == {"b": os.path.abspath("models/b")}


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it fails
    monkeypatch.delitem(sys.modules, "kpt.serve.fleet._ray_launcher")
    with pytest.raises(ImportError, match=r"pip install 'kpt-serve\[ray\]'"):
        from kpt.serve.fleet import RayLauncher  # noqa: F401


def test_a_ray_fleet_serves_over_kpt_wire_and_replaces_a_dead_worker(local_ray, model_dir):
    prompts = random_prompts(3, 4, 12, seed=5)
    local = LLM(model_dir, device="cpu", num_kv_blocks=32).generate(prompts, PARAMS)
    expected = [o.token_ids for o in local]
    spec = WorkerSpec(model="m", model_dir=str(model_dir), threads=1, num_kv_blocks=32)
    fleet = Fleet(
        [spec],
        heartbeat_s=1.0,
        autoscale=ScalingPolicy(min_workers=1, max_workers=1),
        autoscale_interval_s=None,  # the test ticks it
        launcher=functools.partial(RayLauncher, placement_timeout_s=60),
    )
    pids = []
    gone = threading.Event()
    reasons = []
    try:
        fleet.start()
        fleet.wait_ready(timeout=120)
        (first,) = fleet.processes()
        pids.append(first.pid)
        assert isinstance(first, RayWorker)
        # The router binds loopback: its worker was pinned to the router's node.
        assert first.node_id == ray.get_runtime_context().get_node_id()
        assert _generate(fleet, prompts) == expected

        fleet.router.on_worker_gone.append(lambda w, why: (reasons.append(why), gone.set()))
        os.kill(first.pid, signal.SIGKILL)
        assert gone.wait(30), "the router did not notice the worker die within 30s"
        assert reasons == [f"process {first.pid} exited"]
        assert fleet.router.workers() == [] and fleet.processes() == []

        # The autoscaler's minimum brings a replacement up, placed by Ray.
        assert fleet.autoscaler.tick() == 1
        fleet.wait_ready(timeout=120, count=1)
        (second,) = fleet.processes()
        pids.append(second.pid)
        assert second.worker_id != first.worker_id and second.alive()
        assert _generate(fleet, prompts) == expected

        # The actor dies (Ray kills it): its worker process goes with it, the router sees it.
        gone.clear()
        ray.kill(second.actor)
        assert gone.wait(30), "the router did not notice the actor die within 30s"
        assert_gone([second.pid])
    finally:
        fleet.close()
    assert_gone(pids)
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_a_worker_no_node_can_hold_fails_naming_what_it_asked_for(local_ray, model_dir):
    spec = WorkerSpec(model="m", model_dir=str(model_dir), device="kpt_sim:0", profile="h100-sxm")
    asked = r"\{'CPU': 1, 'kpt_sim:h100-sxm': 1\}"
    # A loopback router: its workers are pinned to its node, which lacks the resource: at once.
    launcher = RayLauncher("tcp://127.0.0.1:9", placement_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(WorkerStartError, match=f"router's node offers no {asked}"):
        launcher.start(spec)
    assert time.monotonic() - started < 30
    # A router other nodes could reach: any node may take the worker, or one Ray's autoscaler
    # adds, until the placement timeout.
    launcher = RayLauncher("tcp://203.0.113.7:5555", placement_timeout_s=3)
    started = time.monotonic()
    with pytest.raises(WorkerStartError, match=f"no Ray node had {asked} free within 3s"):
        launcher.start(spec)
    assert time.monotonic() - started < 3 + 20
    assert launcher.workers() == []
    launcher.close()
    assert ray.is_initialized()


def test_kpt_serve_fleet_launches_its_workers_through_ray(local_ray, model_dir):
    httpx = pytest.importorskip("httpx")
    address = ray.get_runtime_context().gcs_address
    process, url = start_server(
        ["fleet", str(model_dir), "--launcher", "ray", "--ray-address", address,
         "--model-name", "m", "--threads", "1", "--num-kv-blocks", "32"]
    )  # fmt: skip
    pids = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            pids = [w["pid"] for w in client.get("/v1/fleet").json()["workers"]]
            prompt = random_prompts(1, 4, 12, seed=8)[0]
            body = {"model": "m", "prompt": prompt, "max_tokens": 8, "temperature": 0.0}
            reply = client.post("/v1/completions", json={**body, "ignore_eos": True})
            assert reply.status_code == 200, reply.text
        expected = LLM(model_dir, device="cpu", num_kv_blocks=32).generate([prompt], PARAMS)
        assert reply.json()["choices"][0]["token_ids"] == expected[0].token_ids
    finally:
        stop_server(process, pids)
