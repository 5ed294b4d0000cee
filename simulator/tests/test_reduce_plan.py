"""The reduction launch model against configurations worked out by hand from torch's
setReduceConfig (ATen's Reduce.cuh) for an H100's 132 SMs."""

import pytest

from kpt.sim._reduce_plan import ReducePlan, plan

H100_SMS = 132


@pytest.mark.parametrize(
    ("outputs", "extent", "contiguous", "dtype_bytes", "expected"),
    [
        # A sum over dim 0 of [1024, 64]: one block of 128 threads, each walking 128 rows of
        # a 4-wide column in 32 rounds of 4 loads; too little work to split across blocks.
        (64, 1024, False, 4, ReducePlan(128, 1, 32, 1, 0)),
        # Over dim 0 of [32768, 256]: split into 512 blocks per output column group; the last
        # block reads 512 partials, 4 rows of threads at a time.
        (256, 32768, False, 4, ReducePlan(128, 1024, 4, 512, 128)),
        # 65536 elements to one value: one 512-thread block, 128 values per thread.
        (1, 65536, True, 4, ReducePlan(512, 1, 32, 1, 0)),
        (1, 65536, True, 2, ReducePlan(512, 1, 16, 1, 0)),  # 16-bit: 8-element vectors
        # Twice the elements reach 256 per thread: 16 blocks and a grid-wide pass, which is
        # why torch sums 128K elements faster than 64K.
        (1, 131072, True, 4, ReducePlan(512, 16, 4, 16, 1)),
        # Rows of 16: a 16-lane row per output, 32 outputs per block, 131072 blocks.
        (4194304, 16, True, 4, ReducePlan(512, 131072, 1, 1, 0)),
        # Odd outputs cannot be loaded 4 at a time: one output per lane, 32 per block, the
        # 512 rows split over 16 warps (32 values each, 8 rounds).
        (50257, 512, False, 2, ReducePlan(512, 1571, 8, 1, 0)),
    ],
)
def test_plan_matches_torchs_launch(outputs, extent, contiguous, dtype_bytes, expected):
    assert plan(outputs, extent, contiguous, dtype_bytes, H100_SMS) == expected


def test_waves_count_what_the_chip_holds_at_once():
    narrow = plan(4194304, 16, True, 4, H100_SMS)  # 512 threads: 4 blocks per SM
    assert narrow.waves(H100_SMS) == pytest.approx(131072 / (4 * H100_SMS))
    assert plan(1, 1024, True, 4, H100_SMS).waves(H100_SMS) == 1.0  # never under one
