"""The engine unchanged on the simulated device: same tokens as transformers, virtual time."""

from __future__ import annotations

import pytest
from conftest import hf_greedy, make_gpt2, make_llama, random_prompts

from kpt.serve import LLM, SamplingParams

sim = pytest.importorskip("kpt.adapters.sim")


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama-gqa"])
def test_greedy_tokens_equal_transformers_on_kpt_sim(make, tmp_path):
    model_dir = make(tmp_path / "model", layers=1, width=32)
    prompts = random_prompts(4, 3, 24, seed=11)
    reference = hf_greedy(model_dir, prompts, 5)
    # A 16-token budget mixes prompt chunks with decodes in the same steps.
    llm = LLM(model_dir, device="kpt_sim", num_kv_blocks=16, max_num_batched_tokens=16)
    outs = llm.generate(prompts, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    assert [o.token_ids for o in outs] == reference
    stats = llm.engine.stats()
    assert stats.kv_blocks_used == 0
    # Times come from the simulated chip's clock; every op ran on the device, none fell back.
    assert all(0 < o.ttft_ms < o.latency_ms for o in outs)
    assert stats.clock_ms > 0
    assert not {op for op in sim.fallback_report() if "index" in op or "attention" in op}


def test_forwards_are_timed_as_graph_replays_unless_cuda_graphs_is_false(tmp_path):
    import torch

    model_dir = make_gpt2(tmp_path / "model", layers=1, width=32)
    prompts = random_prompts(3, 3, 12, seed=2)
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    replayed = LLM(model_dir, device="kpt_sim", num_kv_blocks=16)
    eager = LLM(model_dir, device="kpt_sim", num_kv_blocks=16, cuda_graphs=False)
    # As CUDA would run it: one host launch per forward (torch.kpt_sim.graph_replay); the
    # engine's own host time goes to the simulated host (torch.kpt_sim.host_work), where it
    # overlaps queued chip work, instead of being added after the chip's time.
    assert replayed.engine.runner.replay_timing is torch.kpt_sim.graph_replay
    assert eager.engine.runner.replay_timing is None
    outs = [llm.generate(prompts, params) for llm in (replayed, eager)]
    assert [o.token_ids for o in outs[0]] == [o.token_ids for o in outs[1]]
    assert replayed.engine.clock._host_ms == 0.0 and replayed.engine.stats().clock_ms > 0


def test_steps_replay_graphs_captured_per_shape_with_the_eager_tokens(tmp_path):
    model_dir = make_llama(tmp_path / "model", layers=2, width=32)
    prompts = random_prompts(4, 9, 9, seed=5)  # one prompt length: its shape comes again
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    graphed = LLM(model_dir, device="kpt_sim", num_kv_blocks=32)
    eager = LLM(model_dir, device="kpt_sim", num_kv_blocks=32)
    eager.engine.runner.step_graphs = None  # still timed as replays, dispatched op by op
    for _ in range(2):
        outs = [llm.generate(prompts, params) for llm in (graphed, eager)]
        assert [o.token_ids for o in outs[0]] == [o.token_ids for o in outs[1]]
    graphs = graphed.engine.runner.step_graphs
    # Round one captured its decode shapes (and ran its prompt step eagerly, a first sight);
    # round two captured the prompt step's shape and replayed every decode shape.
    assert graphs.captures >= 2 and graphs.replays > graphs.captures
    assert graphed.engine.stats().kv_blocks_used == 0


class _ForgetfulEvent:
    """A simulated device's event, from a simulator that keeps only the newest few events
    (the daemon keeps 65,536 per client): timing a forgotten one raises."""

    clock, recorded = 0.0, []

    def __init__(self, enable_timing: bool = False) -> None:
        self.time = None

    def record(self) -> None:
        cls = type(self)
        cls.clock += 1.5  # every step takes 1.5 ms of device time
        self.time = cls.clock
        cls.recorded = [*cls.recorded[-3:], self]

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end) -> float:
        if self not in type(self).recorded:
            raise RuntimeError("event was never recorded by this client (or is long forgotten)")
        return end.time - self.time


def test_the_clock_outlives_the_simulators_event_memory(monkeypatch):
    import torch

    from kpt.serve._clock import DeviceClock

    monkeypatch.setattr(torch.kpt_sim, "Event", _ForgetfulEvent)
    clock = DeviceClock(torch.device("kpt_sim", 0), simulated=True)
    readings = [clock.now_ms() for _ in range(10)]
    assert readings == [1.5 * (i + 1) for i in range(10)]
