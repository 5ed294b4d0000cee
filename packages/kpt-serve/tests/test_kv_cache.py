"""The block pool: reference counts, prefix naming and lookup, LRU eviction, statistics."""

from __future__ import annotations

import pytest

from kpt.serve._kv_cache import BlockPool, KVCacheManager, NoFreeBlocksError


def test_allocate_and_release_return_every_block():
    pool = BlockPool(4, block_size=2)
    blocks = pool.allocate(3)
    assert sorted(blocks) == [0, 1, 2] and pool.num_free == 1
    with pytest.raises(NoFreeBlocksError, match="asked for 2 KV blocks, 1 free"):
        pool.allocate(2)
    pool.release(blocks)
    assert pool.num_free == 4 and pool.stats().usage == 0.0


def test_full_blocks_are_found_by_their_token_chain():
    kv = KVCacheManager(BlockPool(8, block_size=2))
    tokens = [5, 6, 7, 8, 9]
    assert kv.grow("a", 5)
    kv.name_full_blocks("a", tokens, 5)  # [5,6] and [7,8] are full; [9] is not
    kv.free("a")
    # Same first block, different second: only the first block is a hit.
    assert kv.find_prefix("b", [5, 6, 7, 0, 1]) == 2
    # Same two blocks: both hit, and the third token stays to compute.
    assert kv.find_prefix("c", [5, 6, 7, 8, 1]) == 4
    assert kv.blocks("b")[0] == kv.blocks("c")[0]
    # The chain is positional: [7, 8] at the start is not the block that followed [5, 6].
    assert kv.find_prefix("d", [7, 8, 1]) == 0
    stats = kv.pool.stats()
    assert stats.prefix_hits == 6 and stats.prefix_queries == 13


def test_least_recently_freed_cached_block_is_evicted_first():
    pool = BlockPool(2, block_size=1)
    kv = KVCacheManager(pool)
    for name, token in (("a", 1), ("b", 2)):
        kv.grow(name, 1)
        kv.name_full_blocks(name, [token], 1)
        kv.free(name)
    assert pool.stats().cached_blocks == 2
    kv.grow("c", 1)  # takes the block "a" freed first, and forgets its prefix
    assert pool.stats().cached_blocks == 1
    assert kv.find_prefix("x", [1, 0]) == 0
    assert kv.find_prefix("y", [2, 0]) == 1
    for name in ("c", "x", "y"):
        kv.free(name)
    assert pool.num_free == 2


def test_shared_blocks_stay_held_until_every_holder_releases():
    pool = BlockPool(4, block_size=2)
    kv = KVCacheManager(pool)
    kv.grow("a", 3)
    kv.name_full_blocks("a", [1, 2, 3], 3)
    assert kv.find_prefix("b", [1, 2, 4]) == 2
    kv.free("a")
    assert pool.stats().used_blocks == 1  # the shared block, still held by "b"
    kv.free("b")
    assert pool.stats().used_blocks == 0


def test_prefix_caching_off_finds_nothing():
    kv = KVCacheManager(BlockPool(4, block_size=2, prefix_caching=False))
    kv.grow("a", 4)
    kv.name_full_blocks("a", [1, 2, 3, 4], 4)
    kv.free("a")
    assert kv.find_prefix("b", [1, 2, 3, 4, 5]) == 0
