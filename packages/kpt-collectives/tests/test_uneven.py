"""Uneven shards (sizes in proportion to speed): all_gather_uneven and reduce_scatter_uneven on
2 kpt_sim ranks of one daemon (h100-sxm + mi300x) and on 3 cpu ranks, exact against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from rank_jobs import ROW, rank_values, throughputs, uneven_sizes
from ranks import check_ok, load, run_ranks

from kpt.collectives import all_gather_uneven, shard_sizes

REDUCE = {"sum": np.sum, "max": np.max, "avg": np.mean}


def check_uneven(folder, world: int) -> None:
    sizes = uneven_sizes(world)
    total = sum(sizes)
    shards = [rank_values(r, sizes[r] * ROW).numpy().reshape(-1, ROW) for r in range(world)]
    fulls = np.stack([rank_values(r, total * ROW).numpy().reshape(total, ROW)
                      for r in range(world)])  # fmt: skip
    starts = np.cumsum([0, *sizes])
    for rank in range(world):
        got = load(folder, f"uneven_gather_{rank}")
        np.testing.assert_array_equal(got, np.concatenate(shards), err_msg=f"gather, rank {rank}")
        for name, fn in REDUCE.items():
            want = fn(fulls, axis=0)[starts[rank] : starts[rank + 1]]
            got = load(folder, f"uneven_scatter_{name}_{rank}")
            assert got.shape == (sizes[rank], ROW)
            what = f"reduce_scatter {name}, rank {rank}"
            np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=what)
        message = str(load(folder, f"uneven_list_error_{rank}")[0])
        assert "all_gather_uneven" in message, message


def test_shard_sizes_are_proportional_to_speed_and_sum_to_numel():
    assert shard_sizes(11, throughputs(2)) == [5, 6]  # h100-sxm, mi300x bf16 peaks
    assert shard_sizes(1000, [1.0, 3.0]) == [250, 750]
    assert sum(shard_sizes(7, [1, 1, 1])) == 7
    with pytest.raises(ValueError, match=r"shard_sizes: rank 1 has throughput -1"):
        shard_sizes(10, [1.0, -1])
    with pytest.raises(ValueError, match=r"shard_sizes: numel = 2.5"):
        shard_sizes(2.5, [1.0])


def test_sizes_that_do_not_match_the_tensors_are_refused_with_the_shapes(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)  # fmt: skip
    try:
        with pytest.raises(ValueError, match=r"output has shape \(4, 3\); with sizes \[5\]"):
            all_gather_uneven(torch.empty(4, 3), torch.empty(5, 3), [5])
        with pytest.raises(ValueError, match=r"one int >= 0 per rank of the group \(1 ranks\)"):
            all_gather_uneven(torch.empty(5, 3), torch.empty(5, 3), [2, 3])
        out = torch.empty(5, 3)
        all_gather_uneven(out, torch.ones(5, 3), [5])  # world 1: the shard itself
        assert out.eq(1).all()
    finally:
        dist.destroy_process_group()


def test_uneven_shards_on_kpt_sim_ranks_of_one_daemon_are_exact(daemon, tmp_path):
    check_ok(run_ranks("uneven_shards", 2, tmp_path, daemon))
    check_uneven(tmp_path, 2)


def test_uneven_shards_on_cpu_ranks_are_exact_with_an_empty_shard(tmp_path):
    check_ok(run_ranks("uneven_shards", 3, tmp_path))
    check_uneven(tmp_path, 3)
