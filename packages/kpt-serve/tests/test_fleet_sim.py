"""A virtual-time fleet: two kpt_sim workers on different chip profiles behind the router,
routed by their engines' clocks (simulated time); TTFT/TPOT per chip come from the simulator.
Kept small: a kpt_sim worker takes tens of seconds to start here, and its steps are slow."""

from __future__ import annotations

import pytest
from conftest import hf_greedy, random_prompts
from fleet_helpers import sim_worker_specs

from kpt.serve import LLM, SamplingParams

pytest.importorskip("kpt.adapters.sim")
httpx = pytest.importorskip("httpx")
parser = pytest.importorskip("prometheus_client.parser")
fleet_module = pytest.importorskip("kpt.serve.fleet")
from kpt.serve.fleet._api import BackgroundHttp, FleetApi  # noqa: E402
from kpt.serve.fleet._bench import BenchConfig, run_bench  # noqa: E402
from kpt.serve.fleet.demo import write_tiny_gpt2  # noqa: E402

pytestmark = pytest.mark.timeout(300)

PROFILES = {"h100-sxm": "H100", "mi300x": "MI300X"}  # profile -> a word of its chip's name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("sim-fleet") / "m", layers=1, width=32)


@pytest.fixture(scope="module")
def sim_fleet(model_dir):
    specs = sim_worker_specs(model_dir, PROFILES, "device", num_kv_blocks=32)
    with fleet_module.Fleet(specs) as fleet:
        fleet.wait_ready(timeout=240)
        http = BackgroundHttp(FleetApi(fleet.router, fleet.metrics, fleet.model_dirs).app)
        try:
            with httpx.Client(base_url=http.url, timeout=120) as client:
                yield fleet, client
        finally:
            http.close()


def test_the_tiny_demo_model_is_what_transformers_reads(model_dir):
    prompts = random_prompts(2, 3, 10, seed=2)
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    outs = LLM(model_dir, device="cpu", num_kv_blocks=8).generate(prompts, params)
    assert [o.token_ids for o in outs] == hf_greedy(model_dir, prompts, 5)


def test_sim_workers_answer_with_cpu_tokens_and_simulated_times_per_chip(sim_fleet, model_dir):
    _, client = sim_fleet
    workers = client.get("/v1/fleet").json()["workers"]
    chips = sorted(w["device_model"] for w in workers)
    assert all(w["device_kind"] == "simulated" and w["step_clock"] == "device" for w in workers)
    assert [any(word in chip for chip in chips) for word in PROFILES.values()] == [True, True]

    prompts = random_prompts(4, 3, 12, seed=7)
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    expected = [o.token_ids for o in LLM(model_dir, device="cpu").generate(prompts, params)]
    body = {"model": "m", "prompt": prompts, "max_tokens": 4, "temperature": 0.0}
    reply = client.post("/v1/completions", json={**body, "ignore_eos": True})
    assert reply.status_code == 200, reply.text
    assert [c["token_ids"] for c in reply.json()["choices"]] == expected
    for served in reply.json()["kpt"]["choices"]:
        assert served["chip"] in chips
        assert served["device_ttft_ms"] > 0 and served["device_tpot_ms"] > 0

    families = {
        f.name: f for f in parser.text_string_to_metric_families(client.get("/metrics").text)
    }
    counts = [
        s
        for s in families["kpt_serve_device_time_to_first_token_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert sum(s.value for s in counts) == len(prompts)
    assert {s.labels["chip"] for s in counts} <= set(chips)
    clocks = [w["clock"] for w in client.get("/v1/fleet").json()["workers"]]
    assert sum(c["requests"] for c in clocks) == len(prompts)
    assert all(c["simulated"] for c in clocks)


def test_bench_reports_ttft_and_tpot_per_simulated_chip(sim_fleet):
    fleet, client = sim_fleet
    result = run_bench(
        BenchConfig(url=str(client.base_url), model="m", num_prompts=6, input_len=8, output_len=3)
    )
    assert result["completed"] == 6 and result["failed"] == 0
    per_chip = result["per_chip"]
    assert sum(c["requests"] for c in per_chip.values()) == 6
    for chip in per_chip.values():
        assert chip["device_ttft_ms"]["median"] > 0 and chip["device_tpot_ms"]["median"] > 0
    # Every request came back labelled with the chip that served it.
    assert set(per_chip) <= {w.device.model for w in fleet.router.workers()}
