"""Virtual time: a Server scenario's arrivals and the simulated chips' service on one timeline.

Two kpt_sim workers (step_clock="virtual") behind the real router; the driver releases each
request when every worker's clock has reached its arrival. Times are the chips' clocks, so
they must obey the scenario, not the (much slower, loaded) wall clock of this machine."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import subprocess
import sys

import pytest
from conftest import random_prompts
from fleet_helpers import sim_worker_specs

from kpt.serve import LLM, SamplingParams

pytest.importorskip("kpt.adapters.sim")
pytest.importorskip("httpx")
fleet_module = pytest.importorskip("kpt.serve.fleet")
from kpt.serve._clock import DeviceClock  # noqa: E402
from kpt.serve.fleet._bench import BenchConfig  # noqa: E402
from kpt.serve.fleet._virtual_bench import arrival_times_ms, run_virtual, submit_virtual  # noqa: E402
from kpt.serve.fleet._virtual_time import Horizon  # noqa: E402
from kpt.serve.fleet._worker import Worker  # noqa: E402
from kpt.serve.fleet.demo import write_tiny_gpt2  # noqa: E402

pytestmark = pytest.mark.timeout(400)

PROFILES = ("h100-sxm", "mi300x")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("virtual") / "m", layers=1, width=32)


@pytest.fixture(scope="module")
def virtual_fleet(model_dir):
    specs = sim_worker_specs(model_dir, PROFILES, "virtual", num_kv_blocks=64, max_num_seqs=2)
    with fleet_module.Fleet(specs) as fleet:
        fleet.wait_ready(timeout=240)
        yield fleet


def test_poisson_arrivals_have_the_asked_rate_and_span():
    rate, span = 4.0, 2000.0
    times = arrival_times_ms(BenchConfig(url="", request_rate=rate, duration_s=span, seed=3), 1)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # ~8,000 exponential gaps: the mean is within 3 % of 1/rate unless the generator is wrong.
    assert statistics.mean(gaps) == pytest.approx(1000.0 / rate, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(1000.0 / rate, rel=0.05)  # exponential
    assert times[0] == 0.0 and times[-1] < 1000.0 * span
    assert arrival_times_ms(BenchConfig(url="", num_prompts=5), 5) == [0.0] * 5  # Offline


def test_an_idle_chip_moves_to_the_horizon_and_says_so_once():
    import torch

    import kpt.adapters.sim  # noqa: F401  (the kpt_sim device, embedded in this process)

    horizon = Horizon(DeviceClock(torch.device("kpt_sim:0"), simulated=True))
    start = horizon.clock.now_ms()
    assert not horizon.open() and horizon.reached() is not None  # horizon 0: already there
    horizon.extend(start + 250.0)
    assert horizon.open() and horizon.reached() is None  # before it: may step, nothing to say
    horizon.idle()
    assert horizon.clock.now_ms() == pytest.approx(start + 250.0, abs=1e-3)
    assert not horizon.open()
    assert horizon.reached() == pytest.approx(start + 250.0, abs=1e-3)
    assert horizon.reached() is None  # told once per horizon
    horizon.extend(start + 100.0)  # a horizon never moves back
    assert horizon.until_ms == start + 250.0
    horizon.extend(None)  # no more arrivals: run freely, nothing to report
    assert horizon.open() and horizon.reached() is None and math.isinf(horizon.until_ms)


def test_a_real_device_cannot_keep_virtual_time(model_dir):
    from kpt.serve.fleet._model_set import ModelSet

    models = ModelSet({"m": str(model_dir)}, lambda name, path: LLM(path, device="cpu").engine)
    with pytest.raises(ValueError, match="needs a simulated device"):
        Worker(models, worker_id="w", router_endpoint="tcp://127.0.0.1:9", step_clock="virtual")


def test_a_server_scenario_runs_on_the_chips_clocks(virtual_fleet, model_dir):
    fleet = virtual_fleet
    rate, span = 0.5, 30.0  # one request per 2 s of virtual time, for 30 s
    config = BenchConfig(
        url="", model="m", request_rate=rate, duration_s=span, num_prompts=4, input_len=6,
        output_len=4, seed=1,
    )  # fmt: skip
    arrivals = arrival_times_ms(config, 4)
    result = run_virtual(fleet.router, config, timeout_s=300)
    assert result["completed"] == len(arrivals) and result["failed"] == 0
    # The scenario's span is virtual: the run ends after the last arrival, by about one
    # request's service (a few simulated ms), whatever this machine's wall clock did.
    last = arrivals[-1] / 1000.0
    assert last <= result["duration_s"] <= last + 1.0
    # Requests 2 s apart on an idle fleet never queue: TTFT is a prefill (well under a
    # virtual second), TPOT a decode step, E2E their sum; all on the chips' clocks.
    ttft, tpot, e2e = result["ttft_ms"], result["tpot_ms"], result["e2e_ms"]
    assert 0 < ttft["median"] <= ttft["p99"] < 100.0
    assert 0 < tpot["median"] < 100.0
    assert ttft["median"] < e2e["median"] < 500.0
    assert sum(c["requests"] for c in result["per_chip"].values()) == len(arrivals)
    # Every worker reached the last arrival on its own clock.
    assert all(ms >= arrivals[-1] - 1e-3 for ms in fleet.router.clock.reached_ms().values())


def test_a_burst_queues_in_virtual_time_and_tokens_stay_right(virtual_fleet, model_dir):
    # Eight requests at once on two chips of two seats each: at least four wait for a seat,
    # which frees only when a request on that chip finishes, so those four first tokens come
    # after the quickest request's end. Tokens are the CPU engine's.
    prompts = random_prompts(8, 4, 8, seed=5)
    requests = submit_virtual(
        virtual_fleet.router, "m", [(0.0, p, 6) for p in prompts], timeout_s=300
    )
    expected = LLM(model_dir, device="cpu").generate(
        prompts, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    )
    assert [r.token_ids for r in requests] == [o.token_ids for o in expected]
    assert all(r.error is None for r in requests)
    ttfts = sorted(r.ttft_s for r in requests)
    assert ttfts[4] >= min(r.e2e_s for r in requests) - 1e-9
    assert ttfts[0] > 0


def test_kpt_serve_simulate_runs_a_scenario_and_refuses_real_devices(model_dir, tmp_path):
    command = [sys.executable, "-m", "kpt.serve._cli", "simulate", str(model_dir)]
    scenario = ["--num-prompts", "3", "--input-len", "4", "--output-len", "3", "--threads", "1"]
    out = tmp_path / "result.json"
    run = subprocess.run(
        [*command, "--workers", "kpt_sim:0@h100-sxm", *scenario, "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clock"] == "virtual" and result["scenario"] == "offline"
    assert result["completed"] == 3 and result["failed"] == 0
    assert "Wall time (s):" in run.stdout and "H100" in run.stdout
    refused = subprocess.run(
        [*command, "--workers", "cpu", *scenario], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "must all be kpt_sim devices" in refused.stderr
