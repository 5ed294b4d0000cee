"""Paged KV blocks: a pool with reference counts, prefix caching by hashed block chains, LRU.

A block is `block_size` token slots in every layer's cache. A request holds a list of blocks.
Once a block is full its contents are named by a chain hash (the parent block's hash and the
block's token ids), so a later request whose prompt starts with the same tokens reuses the
block instead of recomputing it. Blocks nobody holds stay in the free queue with their hash
until allocation reuses them, least recently freed first (LRU eviction).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

BlockKey = tuple[int, tuple[int, ...]]  # (parent block's hash, this block's token ids)


class NoFreeBlocksError(RuntimeError):
    """Raised by BlockPool.allocate when fewer blocks are free than asked for."""


@dataclass(frozen=True)
class KVStats:
    total_blocks: int
    used_blocks: int  # held by at least one request
    cached_blocks: int  # free but still holding a reusable prefix
    prefix_queries: int  # prompt tokens looked up in the prefix cache
    prefix_hits: int  # of those, tokens found

    @property
    def usage(self) -> float:
        return self.used_blocks / self.total_blocks if self.total_blocks else 0.0

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0


class BlockPool:
    """Owns every block id: who holds it (reference count) and which prefix it caches."""

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"num_blocks={num_blocks} and block_size={block_size} must both be >= 1"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._key_of: dict[int, BlockKey] = {}
        self._block_of: dict[BlockKey, int] = {}
        self.prefix_queries = 0
        self.prefix_hits = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise NoFreeBlocksError(f"asked for {count} KV blocks, {len(self._free)} free")
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)  # least recently freed first
            key = self._key_of.pop(block, None)
            if key is not None:  # evict the prefix it cached
                del self._block_of[key]
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def hold(self, blocks: Sequence[int]) -> None:
        """Take another reference to cached blocks (a prefix hit)."""
        for block in blocks:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1

    def release(self, blocks: Sequence[int]) -> None:
        # Tail blocks first: they are the least likely to be shared, so evict them first.
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
            elif self._refs[block] < 0:
                raise RuntimeError(f"KV block {block} released more often than held")

    def cached_block(self, key: BlockKey) -> int | None:
        return self._block_of.get(key) if self.prefix_caching else None

    def name_block(self, block: int, key: BlockKey) -> None:
        """Record that a full block holds the prefix `key` (first writer wins)."""
        if self.prefix_caching and key not in self._block_of and block not in self._key_of:
            self._block_of[key] = block
            self._key_of[block] = key

    def cached_prefixes(self, limit: int) -> list[int]:
        """Chain hashes of up to `limit` cached blocks, the most recently named first (what a
        worker tells the router; its prefix keys are the same hashes)."""
        keys = list(self._block_of)  # one C call: safe beside the engine thread
        return [hash(key) for key in reversed(keys[-limit:])]

    def stats(self) -> KVStats:
        cached = sum(1 for b in self._free if b in self._key_of)
        return KVStats(
            total_blocks=self.num_blocks,
            used_blocks=self.num_blocks - len(self._free),
            cached_blocks=cached,
            prefix_queries=self.prefix_queries,
            prefix_hits=self.prefix_hits,
        )


class KVCacheManager:
    """The blocks of each request: prefix lookup, growth, naming full blocks, release."""

    def __init__(self, pool: BlockPool) -> None:
        self.pool = pool
        self.block_size = pool.block_size
        self._blocks: dict[str, list[int]] = {}
        self._keys: dict[str, list[BlockKey]] = {}  # keys of the request's named blocks

    def blocks(self, request_id: str) -> list[int]:
        return self._blocks.get(request_id, [])

    def find_prefix(self, request_id: str, token_ids: Sequence[int]) -> int:
        """Attach the longest cached prefix of token_ids; returns how many tokens it covers.

        At least one token is always left to compute, so the step has logits to sample from.
        """
        self.pool.prefix_queries += len(token_ids)
        full_blocks = (len(token_ids) - 1) // self.block_size
        parent, hits, keys = 0, [], []
        for i in range(full_blocks):
            key = (parent, tuple(token_ids[i * self.block_size : (i + 1) * self.block_size]))
            block = self.pool.cached_block(key)
            if block is None:
                break
            hits.append(block)
            keys.append(key)
            parent = hash(key)
        self.pool.hold(hits)
        self._blocks[request_id] = hits
        self._keys[request_id] = keys
        self.pool.prefix_hits += len(hits) * self.block_size
        return len(hits) * self.block_size

    def grow(self, request_id: str, num_tokens: int) -> bool:
        """Make room for num_tokens in total; False (nothing changed) when blocks run out."""
        blocks = self._blocks.setdefault(request_id, [])
        need = -(-num_tokens // self.block_size) - len(blocks)
        if need <= 0:
            return True
        if need > self.pool.num_free:
            return False
        blocks.extend(self.pool.allocate(need))
        return True

    def has_unnamed_full_blocks(self, request_id: str, computed: int) -> bool:
        return computed // self.block_size > len(self._keys.get(request_id, ()))

    def name_full_blocks(self, request_id: str, token_ids: Sequence[int], computed: int) -> None:
        """Name the blocks that the first `computed` tokens filled, for later prefix hits."""
        keys = self._keys.setdefault(request_id, [])
        blocks = self._blocks[request_id]
        parent = hash(keys[-1]) if keys else 0
        for i in range(len(keys), computed // self.block_size):
            key = (parent, tuple(token_ids[i * self.block_size : (i + 1) * self.block_size]))
            self.pool.name_block(blocks[i], key)
            keys.append(key)
            parent = hash(key)

    def free(self, request_id: str) -> None:
        self.pool.release(self._blocks.pop(request_id, []))
        self._keys.pop(request_id, None)
