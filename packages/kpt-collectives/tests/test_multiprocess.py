"""Real rank processes on one simulator daemon (kpt_sim) and on gloo (cpu): values exact against
a CPU reference, DDP equal to one process on the whole batch, a missing rank named in time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rank_jobs
import torch
from rank_jobs import N, rank_values
from ranks import check_ok, load, run_ranks

OPS = {"sum": np.sum, "avg": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


def expected_values(world: int) -> dict[str, list[np.ndarray]]:
    """Every collective of rank_jobs.every_collective, computed with numpy per rank."""
    mine = [rank_values(r).numpy() for r in range(world)]
    big = [rank_values(r, world * N).numpy() for r in range(world)]
    out: dict[str, list[np.ndarray]] = {}
    for name, fn in OPS.items():
        out[f"all_reduce_{name}"] = [fn(np.stack(mine), axis=0)] * world
    out["all_gather"] = [np.stack(mine)] * world
    out["all_gather_into_tensor"] = [np.concatenate(mine)] * world
    total = np.sum(np.stack(big), axis=0)
    top = np.max(np.stack(big), axis=0)
    out["reduce_scatter_tensor"] = [total[r * N : (r + 1) * N] for r in range(world)]
    out["reduce_scatter_max"] = [top[r * N : (r + 1) * N] for r in range(world)]
    scaled = sum(rank_jobs.premul_factor(r) * big[r] for r in range(world))
    out["reduce_scatter_premul_sum"] = [scaled[r * N : (r + 1) * N] for r in range(world)]
    out["all_reduce_premul_sum"] = [sum(rank_jobs.premul_factor(r) * mine[r]
                                        for r in range(world))] * world  # fmt: skip
    out["broadcast"] = [mine[world - 1]] * world
    swapped = [np.concatenate([big[j][r * N : (r + 1) * N] for j in range(world)])
               for r in range(world)]  # fmt: skip
    out["all_to_all_single"] = out["all_to_all"] = swapped
    sends = [rank_values(r, sum(range(1, world + 1))).numpy() for r in range(world)]
    starts = np.cumsum([0, *range(1, world + 1)])
    out["all_to_all_uneven"] = [
        np.concatenate([sends[j][starts[r] : starts[r + 1]] for j in range(world)])
        for r in range(world)
    ]
    out["ring"] = [mine[(r - 1) % world] for r in range(world)]
    out["async"] = [np.sum(np.stack(mine), axis=0)] * world
    return out


def check_every_collective(folder: Path, world: int) -> None:
    for name, per_rank in expected_values(world).items():
        for rank, expected in enumerate(per_rank):
            got = load(folder, f"{name}_{rank}")
            np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6,
                                       err_msg=f"{name} on rank {rank}")  # fmt: skip


def test_every_collective_on_kpt_sim_ranks_of_one_daemon_is_exact(daemon, tmp_path):
    check_ok(run_ranks("every_collective", 2, tmp_path, daemon))
    check_every_collective(tmp_path, 2)


def test_every_collective_on_cpu_ranks_goes_through_gloo(tmp_path):
    check_ok(run_ranks("every_collective", 3, tmp_path))
    check_every_collective(tmp_path, 3)


def test_a_mixed_group_kpt_sim_and_cpu_is_staged_through_the_host(daemon, tmp_path):
    check_ok(run_ranks("every_collective", 2, tmp_path, daemon, KPT_TEST_CPU_RANKS="1"))
    check_every_collective(tmp_path, 2)


def test_a_mixed_group_all_reduces_by_the_hierarchical_plan_exactly(daemon, tmp_path):
    # Ranks 0 and 1 on the daemon's h100-sxm and mi300x, 2 and 3 on the CPU: two groups of two,
    # for which the cost model ranks the hierarchical plan first at this size.
    check_ok(run_ranks("hierarchical_all_reduce", 4, tmp_path, daemon, KPT_TEST_CPU_RANKS="2,3"))
    n = rank_jobs.HIERARCHICAL_N
    mine = np.stack([rank_values(r, n).numpy() for r in range(4)])
    for name, fn in OPS.items():
        for rank in range(4):
            got = load(tmp_path, f"hierarchical_{name}_{rank}")
            np.testing.assert_allclose(got, fn(mine, axis=0), rtol=1e-6, err_msg=f"{name} {rank}")
    assert all(load(tmp_path, f"hierarchical_ran_{rank}").item() for rank in range(4))


def reference_weights() -> np.ndarray:
    model = rank_jobs.train_single()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


def test_ddp_on_h100_and_mi300x_with_split_batch_equals_one_process_on_the_whole_batch(
    daemon, tmp_path
):
    check_ok(run_ranks("ddp_split", 2, tmp_path, daemon))
    sizes = load(tmp_path, "sizes_0")
    assert list(sizes) == [5, 7]  # mi300x's higher bf16 peak gets the larger share
    w0, w1 = load(tmp_path, "weights_0"), load(tmp_path, "weights_1")
    np.testing.assert_array_equal(w0, w1)  # same all-reduced gradients on both ranks
    np.testing.assert_allclose(w0, reference_weights(), rtol=1e-5, atol=1e-6)


def test_ddp_on_cpu_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    check_ok(run_ranks("ddp_split", 2, tmp_path))
    np.testing.assert_allclose(load(tmp_path, "weights_0"), reference_weights(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_a_rank_that_posts_and_then_only_waits_on_the_host_completes_the_collective(
    daemon, tmp_path
):
    check_ok(run_ranks("idle_after_post", 2, tmp_path, daemon, limit_s=300))
    total = rank_values(0).numpy() + rank_values(1).numpy()
    for rank in range(2):
        np.testing.assert_array_equal(load(tmp_path, f"idle_after_post_{rank}"), total)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("on_sim", [True, False], ids=["kpt_sim", "cpu"])
def test_a_rank_that_never_joins_fails_the_others_within_the_timeout(daemon, tmp_path, on_sim):
    check_ok(run_ranks("straggler", 2, tmp_path, daemon if on_sim else None, limit_s=300))
    seconds = float(load(tmp_path, "straggler_seconds")[0])
    assert seconds < rank_jobs.TIMEOUTS["straggler"] + 10
    message = str(load(tmp_path, "straggler_error")[0])
    if on_sim:
        assert message.startswith("CollectiveTimeoutError")
        assert "ranks [1] never arrived" in message
    else:  # gloo's Work, handed back as it is: gloo's words
        assert "timed out" in message.lower() or "timeout" in message.lower(), message


@pytest.mark.timeout(400)
def test_powersgd_over_the_kpt_backend_on_kpt_sim_ranks_trains_without_a_hang(daemon, tmp_path):
    """PowerSGD's hook posts its next all-reduces from the callbacks of the previous ones. Over
    the kpt backend on kpt_sim it hung, or paired different collectives ("inputs differ in
    size"), while a Work completed only once the daemon said it ran (the callbacks ran on the
    completion thread, racing the autograd thread's posts); it completes at the post now, as
    NCCL's does, and the callbacks run in program order. (gloo's own Work cannot run this hook:
    a callback waits on gloo's thread, "Resource deadlock avoided".)"""
    check_ok(run_ranks("ddp_powersgd", 2, tmp_path, daemon))
    # the 2 plain steps: exactly one process's steps on the whole batch
    plain = load(tmp_path, "plain_0")
    np.testing.assert_array_equal(plain, load(tmp_path, "plain_1"))
    np.testing.assert_allclose(plain, whole_batch_weights(2), rtol=1e-5, atol=1e-6)
    # then rank-1 PowerSGD: both ranks apply the same compressed update, which is close to the
    # exact one and not equal to it
    final = load(tmp_path, "weights_0")
    np.testing.assert_array_equal(final, load(tmp_path, "weights_1"))
    exact, start = whole_batch_weights(6), whole_batch_weights(0)
    assert 1e-4 < np.abs(final - exact).max() < 0.5 * np.abs(exact - start).max()


def whole_batch_weights(steps: int) -> np.ndarray:
    model = rank_jobs.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=rank_jobs.LR)
    for x, y in (rank_jobs.batches() * 2)[:steps]:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


def test_fsdp2_fully_shard_on_cpu_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    check_ok(run_ranks("fsdp2", 2, tmp_path))
    np.testing.assert_allclose(load(tmp_path, "weights_0"), reference_weights(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_fsdp2_fully_shard_on_kpt_sim_ranks_equals_one_process_on_the_whole_batch(daemon, tmp_path):
    """init_device_mesh("kpt_sim"); parameters freed and re-grown (storage resize_) each step and
    copied in by FSDP2's own device ops; both ranks end with one process's weights."""
    check_ok(run_ranks("fsdp2", 2, tmp_path, daemon))
    w0, w1 = load(tmp_path, "weights_0"), load(tmp_path, "weights_1")
    np.testing.assert_array_equal(w0, w1)
    np.testing.assert_allclose(w0, reference_weights(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("on_sim", [True, False], ids=["kpt_sim", "cpu"])
def test_a_dtensor_gathers_and_redistributes_exactly(daemon, tmp_path, on_sim):
    check_ok(run_ranks("dtensor", 2, tmp_path, daemon if on_sim else None))
    full = np.arange(24.0, dtype=np.float32).reshape(6, 4)
    for rank in range(2):
        rows = full[3 * rank : 3 * rank + 3]
        np.testing.assert_array_equal(load(tmp_path, f"local_{rank}"), rows)
        np.testing.assert_array_equal(load(tmp_path, f"full_{rank}"), full)
        np.testing.assert_array_equal(load(tmp_path, f"replicated_{rank}"), 2 * full)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("on_sim", [True, False], ids=["kpt_sim", "cpu"])
def test_a_rank_killed_mid_step_fails_the_other_in_time_and_leaves_no_process(
    daemon, tmp_path, on_sim
):
    results = run_ranks("killed_mid_step", 2, tmp_path, daemon if on_sim else None, limit_s=300)
    assert results[0].returncode == 0, results[0].stdout[-3000:]
    assert results[1].returncode == -9  # SIGKILL, in its second step
    seconds = float(load(tmp_path, "killed_seconds")[0])
    assert seconds < rank_jobs.TIMEOUTS["killed_mid_step"] + 10
    message = str(load(tmp_path, "killed_error")[0])
    if on_sim:  # the daemon names the rank that never posted its part
        assert "ranks [1] never arrived" in message or "rank 1's process" in message, message
    # run_ranks waited for (or killed) both processes before returning: none is left


@pytest.mark.timeout(400)
def test_a_rank_killed_inside_ddps_backward_fails_the_other_with_an_error(daemon, tmp_path):
    """DDP reads a Work's Future in C++: a failed collective must reach it as an error, not as
    a value (the reducer crashed on one, SIGSEGV)."""
    results = run_ranks("ddp_killed_in_backward", 2, tmp_path, daemon, limit_s=300)
    assert results[0].returncode == 0, results[0].stdout[-3000:]
    assert results[1].returncode == -9
    message = str(load(tmp_path, "killed_error")[0])
    assert "ranks [1] never arrived" in message or "rank 1's process" in message, message
    seconds = float(load(tmp_path, "killed_seconds")[0])
    assert seconds < rank_jobs.TIMEOUTS["ddp_killed_in_backward"] + 10
