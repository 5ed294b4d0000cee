import pytest

from kpt.sim._flash_schedule import (
    SCHEDULED_WAVES,
    causal_share,
    causal_time_share,
    tiles_read,
)


def test_a_top_left_causal_mask_reads_the_key_tiles_up_to_the_diagonal():
    assert tiles_read(512, 512, 128, 128) == [1, 2, 3, 4]
    assert tiles_read(256, 512, 128, 128) == [1, 2]  # the last keys are never read
    assert tiles_read(512, 512, 128, 64) == [2, 4, 6, 8]
    assert causal_share(2048, 2048, 128, 128) == pytest.approx(136 / 256)


def test_blocks_go_in_launch_order_to_the_first_free_sm():
    # 2 heads x 4 query tiles (1, 2, 3, 4 key tiles) on 3 SMs; unmasked, 8 blocks of 4 tiles
    # fill 3 waves (12). In order: the first three end at 1, 2, 3; the 4-tile block takes the
    # SM free at 1 (ends 5); the next head's 1 the SM free at 2 (3); its 2 and 3 the SMs free
    # at 3 (5 and 6); its 4 the SM free at 5: the kernel ends at 9.
    assert causal_time_share(2, 512, 512, (128, 128), 3) == pytest.approx(9 / 12)


def test_a_block_s_fixed_start_is_never_saved_by_the_mask():
    many = SCHEDULED_WAVES * 2 * 100  # past the scheduled waves: the ratio of the work
    plain = causal_time_share(many, 512, 512, (128, 128), 2)
    assert plain == pytest.approx(10 / 16)
    with_start = causal_time_share(many, 512, 512, (128, 128), 2, block_tiles=2.0)
    assert with_start == pytest.approx((10 + 4 * 2) / (4 * (4 + 2)))
    assert with_start > plain
