"""Routing, variants, autoscaling and config, without processes: scoring as arithmetic."""

from __future__ import annotations

import pytest

fleet = pytest.importorskip("kpt.serve.fleet")
from kpt.serve import SamplingParams  # noqa: E402
from kpt.serve.fleet._messages import DeviceSummary, WorkerStats  # noqa: E402
from kpt.serve.fleet._workers import WorkerState  # noqa: E402

Candidate, PrefixIndex = fleet.Candidate, fleet.PrefixIndex


def _candidate(worker_id, *, inflight=0, step=1.0, per_token=0.01, kv=0.0, matched=0, seats=256):
    measured = step > 0
    return Candidate(worker_id, 0, inflight, step, per_token, measured, kv, matched, 16, seats)


def test_prefix_keys_name_whole_chunks_and_chain():
    a = fleet.prefix_keys(list(range(40)))
    b = fleet.prefix_keys([*range(32), 99, 98])
    assert len(a) == 2 and len(b) == 2 and a == b  # a partial third chunk has no key
    assert fleet.prefix_keys([0, *range(1, 40)])[:2] == a
    assert fleet.prefix_keys([*range(16), *range(17, 33)])[1] != a[1]
    assert len(fleet.prefix_keys("x" * 130)) == 2  # text: 64-character chunks


def test_prefix_index_matches_leading_keys_and_forgets_least_recent():
    index = PrefixIndex(capacity=3)
    index.add([1, 2, 3])
    assert index.match([1, 2, 3, 4]) == 3 and index.match([5, 1]) == 0
    index.add([7])
    assert index.match([1]) == 0 and len(index) == 3


def test_the_engines_cached_blocks_are_named_by_the_routers_keys():
    from kpt.serve._kv_cache import BlockPool, KVCacheManager

    pool = BlockPool(num_blocks=8, block_size=16)
    kv = KVCacheManager(pool)
    prompt = list(range(100, 150))  # three whole 16-token blocks and two tokens
    kv.find_prefix("r", prompt)
    assert kv.grow("r", len(prompt))
    kv.name_full_blocks("r", prompt, len(prompt))
    keys = fleet.prefix_keys(prompt)
    assert pool.cached_prefixes(8) == keys[::-1]  # most recently named first
    assert pool.cached_prefixes(2) == keys[:0:-1]


def test_a_worker_reports_the_prefixes_its_engines_cache(tmp_path):
    from types import SimpleNamespace

    from conftest import make_gpt2

    from kpt.serve import LLM
    from kpt.serve.fleet._worker import Worker

    llm = LLM(make_gpt2(tmp_path / "m", layers=1, width=32), device="cpu", num_kv_blocks=16)
    prompt = list(range(3, 43))  # two whole blocks
    llm.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0))
    worker = SimpleNamespace(models=SimpleNamespace(engines=lambda: [("m", llm.engine)]))
    assert Worker._cached_prefixes(worker) == fleet.prefix_keys(prompt)[::-1]


def test_a_workers_reports_confirm_keys_and_forget_evicted_ones():
    index = PrefixIndex()
    token_keys, text_keys = [1, 2, 3], [50, 51]
    index.add(token_keys)
    index.add(text_keys, checkable=False)
    index.report([])  # sent just now: the worker may not have computed the prompt yet
    assert index.match(token_keys) == 3
    index.report([1, 2])  # two reports later, block 3 is not held: evicted or never cached
    assert index.match(token_keys) == 2
    index.report([9])  # the worker evicted 1 and 2, and cached a prefix it was never sent
    assert index.match(token_keys) == 0 and index.match([9]) == 1
    assert index.match(text_keys) == 2  # text keys are the router's own: only LRU drops them


def test_predicted_time_counts_batch_prefix_speed_seats_and_kv():
    predict = fleet.predicted_ms
    # Prompt step 1 + 0.01 * 100 tokens, then 19 decode steps of 1 + 0.01 * 1 ms.
    assert predict(_candidate("a"), 100, 20) == pytest.approx(2.0 + 19 * 1.01)
    assert predict(_candidate("a", inflight=10), 100, 20) == pytest.approx(2.1 + 19 * 1.11)
    assert predict(_candidate("a", matched=4), 100, 20) == pytest.approx(1.36 + 19 * 1.01)
    assert predict(_candidate("a", kv=0.99), 100, 20) == pytest.approx(4 * 2.0 + 19 * 1.01)
    full = _candidate("a", inflight=4, seats=4)  # every seat taken: it waits a generation
    assert predict(full, 100, 20) == pytest.approx(2 * 2.04 + 2 * 19 * 1.05)
    assert predict(_candidate("a", step=0.0), 100, 20) is None
    assert fleet.predicted_ttft_ms(_candidate("a", matched=4), 100) == pytest.approx(1.36)


def test_step_time_model_fits_overhead_and_per_token_cost():
    model = fleet.StepTimeModel()
    for tokens in (1, 4, 16, 64, 2, 8) * 5:
        model.add(tokens, 3.0 + 0.5 * tokens)
    overhead, per_token = model.fit()
    assert overhead == pytest.approx(3.0) and per_token == pytest.approx(0.5)
    flat = fleet.StepTimeModel()
    for _ in range(5):
        flat.add(1, 2.0)
    assert flat.fit() == pytest.approx((2.0, 0.0))  # one step size: no per-token cost known


def test_predicted_policy_picks_the_fastest_finish():
    policy = fleet.make_policy("predicted")
    slow_idle = _candidate("slow", step=20.0)
    fast_busy = _candidate("fast", inflight=5)
    assert policy.choose([slow_idle, fast_busy], 50, 50) == "fast"
    crowded = _candidate("fast", inflight=64, seats=8)
    assert policy.choose([_candidate("slow", step=5.0), crowded], 50, 50) == "slow"
    holder = _candidate("holder", matched=6, inflight=1, per_token=0.05)
    other = _candidate("other", per_token=0.05)
    assert policy.choose([other, holder], 100, 4) == "holder"
    # No per-token cost fitted yet: the times tie, and the prefix decides.
    flat_holder = _candidate("holder", matched=2, per_token=0.0, step=1.02)
    flat_other = _candidate("other", per_token=0.0, step=1.0)
    assert policy.choose([flat_other, flat_holder], 40, 4) == "holder"


def test_prefix_wins_while_speeds_are_unknown_and_p2c_spreads_otherwise():
    policy = fleet.make_policy("predicted")
    cold = [_candidate("a", step=0.0), _candidate("b", step=0.0, matched=2)]
    assert all(policy.choose(cold, 40, 8) == "b" for _ in range(20))
    crowd = [Candidate(f"w{i}", 100 * i, i, 0.0, 0.0, False, 0.0, 0, 16) for i in range(4)]
    picks = {policy.choose(crowd, 40, 8) for _ in range(200)}
    assert "w3" not in picks and len(picks) >= 2  # two at random, the less loaded of the two


def test_round_robin_takes_turns_and_unknown_policy_is_named():
    policy = fleet.make_policy("round_robin")
    workers = [_candidate("a"), _candidate("b"), _candidate("c")]
    assert sorted(policy.choose(workers, 1, 1) for _ in range(6)) == list("aabbcc")
    with pytest.raises(ValueError, match="p2c, predicted, round_robin"):
        fleet.make_policy("fastest")


def _worker(worker_id, variant, dtype, queued_requests=0):
    worker = WorkerState(
        worker_id=worker_id, endpoint="-", pid=0, model="m", variant=variant, dtype=dtype,
        device=DeviceSummary("cpu:0", "host"), client=None, model_info={}, max_num_seqs=2,
    )  # fmt: skip
    worker.stats = WorkerStats(step_overhead_ms=1.0, step_ms_per_token=0.01, steps_measured=10)
    for i in range(queued_requests):
        worker.inflight[f"x{i}"] = fleet.FleetRequest(
            f"x{i}", "m", None, [1] * 100, SamplingParams(max_tokens=100), 0, None, print, []
        )
    return worker


def test_slo_picks_the_cheapest_variant_that_meets_it_and_a_faster_one_under_load():
    router = fleet.Router()
    bf16 = _worker("cheap", "bf16", "bfloat16")
    fp32 = _worker("dear", "fp32", "float32")
    slo = fleet.Slo(ttft_ms=5.0)
    request = fleet.FleetRequest(
        "r", "m", None, [1] * 100, SamplingParams(max_tokens=8), 0, slo, print, []
    )
    assert router._variant_for_slo([bf16, fp32], request) == [bf16]  # both 2 ms: the cheaper
    loaded = _worker("cheap", "bf16", "bfloat16", queued_requests=10)  # 6 rounds of 2.1 ms
    assert router._variant_for_slo([loaded, fp32], request) == [fp32]
    router.close()


def test_autoscaler_adds_on_queue_or_slow_ttft_removes_when_idle_within_bounds():
    policy = fleet.ScalingPolicy(
        min_workers=1, max_workers=3, target_queue=2, idle_s=5, cooldown_s=10
    )
    load = fleet.FleetLoad
    assert fleet.decide(policy, load(1, 5, 6, None), 0, 60) == 1
    assert fleet.decide(policy, load(1, 5, 6, None), 0, 3) == 0  # cooling down
    assert fleet.decide(policy, load(3, 50, 60, None), 0, 60) == 0  # at max
    assert fleet.decide(policy, load(2, 0, 0, None), 10, 60) == -1
    assert fleet.decide(policy, load(2, 0, 0, None, starting=1), 10, 60) == 0  # one loading
    assert fleet.decide(policy, load(1, 0, 0, None), 10, 60) == 0  # at min
    assert fleet.decide(policy, load(0, 0, 0, None), 0, 0) == 1  # below min: now
    slow = fleet.ScalingPolicy(max_workers=2, target_ttft_ms=100)
    assert fleet.decide(slow, load(1, 0, 1, 250.0), 0, 60) == 1
    with pytest.raises(ValueError, match="min_workers"):
        fleet.ScalingPolicy(min_workers=3, max_workers=2)


def test_autoscaler_ticks_call_scale():
    changes = []
    loads = iter([fleet.FleetLoad(1, 10, 10, None), fleet.FleetLoad(2, 10, 10, None)])
    scaler = fleet.Autoscaler(
        fleet.ScalingPolicy(max_workers=2, cooldown_s=0), lambda: next(loads), changes.append
    )
    assert scaler.tick(now=100.0) == 1 and scaler.tick(now=101.0) == 0
    assert changes == [1] and scaler.events[0][1] == 1


def test_fleet_config_parses_and_names_mistakes(tmp_path):
    config = fleet.parse_fleet_config(
        {
            "policy": "p2c",
            "launcher": "ray",
            "ray_address": "auto",
            "ray_placement_timeout_s": 30,
            "workers": [
                {"model": "a", "path": "models/a", "device": "cpu", "count": 2, "variant": "fp32"},
                {
                    "model": "a",
                    "path": "/abs/a",
                    "device": "kpt_sim:0",
                    "dtype": "bfloat16",
                    "variant": "bf16",
                    "profile": "mi300x",
                    "step_clock": "device",
                    "extra_models": {"b": "models/b"},
                    "memory_budget_mb": 64,
                },
            ],
            "autoscale": {"model": "a", "max_workers": 4},
        },
        base=tmp_path,
    )
    assert config.policy == "p2c" and len(config.workers) == 3
    ray_keys = (config.launcher, config.ray_address, config.ray_placement_timeout_s)
    assert ray_keys == ("ray", "auto", 30.0)
    assert fleet.parse_fleet_config({"workers": [{"model": "a", "path": "p"}]}).launcher == "local"
    assert config.workers[0].model_dir == str(tmp_path / "models/a")
    assert config.workers[2].dtype == "bfloat16" and config.autoscale.max_workers == 4
    sim = config.workers[2]
    assert (sim.profile, sim.step_clock, sim.memory_budget_mb) == ("mi300x", "device", 64)
    assert sim.models == {"a": "/abs/a", "b": str(tmp_path / "models/b")}
    with pytest.raises(ValueError, match="kpt_sim chip profile"):
        fleet.parse_fleet_config({"workers": [{"model": "a", "path": "p", "profile": "h200"}]})
    with pytest.raises(ValueError, match="extra_models must be a table"):
        fleet.parse_fleet_config({"workers": [{"model": "a", "path": "p", "extra_models": 3}]})
    with pytest.raises(ValueError, match="unknown keys \\['gpu'\\]"):
        fleet.parse_fleet_config({"workers": [{"model": "a", "path": "p", "gpu": 1}]})
    with pytest.raises(ValueError, match="launcher 'k8s': use one of local, ray"):
        fleet.parse_fleet_config({"launcher": "k8s", "workers": [{"model": "a", "path": "p"}]})
    with pytest.raises(ValueError, match="no \\[\\[workers\\]\\]"):
        fleet.parse_fleet_config({})


def test_a_moved_request_resumes_from_its_prompt_and_streamed_tokens():
    params = SamplingParams(max_tokens=10, min_tokens=4, temperature=0.0)
    request = fleet.FleetRequest("r", "m", None, "some text", params, 0, None, print, [])
    request.new_attempt("w0")
    request.take_output({"new": [7], "prompt_ids": [1, 2, 3], "text": "a"}, "w0", 1.0)
    request.take_output({"new": [8, 9], "text": "b"}, "w0", 2.0)
    request.resume_from_streamed()
    assert request.current_prompt == [1, 2, 3, 7, 8, 9]
    assert request.current_params.max_tokens == 7 and request.current_params.min_tokens == 1
    request.new_attempt("w1")
    assert request.attempt_id == "r.1" and request.workers_tried == ["w0", "w1"]
    # The second worker reports its own prompt (ours plus the streamed tokens): ignored.
    request.take_output({"new": [4], "prompt_ids": [1, 2, 3, 7, 8, 9], "finished": True}, "w1", 3.0)
    assert request.prompt_ids == [1, 2, 3] and request.token_ids == [7, 8, 9, 4]
    assert request.finished and request.text == "ab"


def test_openai_bodies_parse_with_openai_defaults_and_name_bad_fields():
    from kpt.serve.fleet._openai import BadRequest, parse_options, parse_prompts

    options = parse_options({"model": "m"})
    assert options.params.max_tokens == 16 and options.params.temperature == 1.0
    assert not options.stream and options.slo is None
    slo = parse_options({"slo": {"ttft_ms": 200}, "temperature": 0, "stream": True})
    assert slo.slo == fleet.Slo(ttft_ms=200) and slo.params.greedy and slo.stream
    assert parse_prompts([[1, 2], "x"]) == [[1, 2], "x"] and parse_prompts([3, 4]) == [[3, 4]]
    for body, words in (
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n and best_of"),
        ({"slo": {"ttft": 1}}, "slo must be"),
        ({"priority": "high"}, "priority"),
    ):
        with pytest.raises(BadRequest, match=words):
            parse_options(body)
    with pytest.raises(BadRequest, match="neither text nor"):
        parse_prompts([[1], {"a": 1}])
