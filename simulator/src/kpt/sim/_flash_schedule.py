"""How long a causal flash-attention kernel keeps the SMs busy, against the unmasked kernel.

Flash attention launches one thread block per (batch*head, tile of queries), in launch order:
the query tile varies fastest (FlashAttention-2's grid is (query tiles, batch, heads)). Each
SM takes the next block when its last one ends. Unmasked, every block reads every key tile
and the blocks fill ceil(blocks / SMs) equal waves. Under SDPA's causal mask (top-left) query
tile t reads only the key tiles up to its diagonal, so the blocks differ; with few blocks per
SM the heaviest ones, launched last within each head, set the time, and the mask saves far
less than its share of the tiles (8 heads of 4096 queries on an H100 took 0.87 of the
unmasked time, not 0.52). Each block also pays a fixed start and finish (loading its queries,
writing its output), counted in key tiles of work (`block_tiles`), which the mask never saves.
"""

from __future__ import annotations

import functools
import heapq
import math

# Past this many waves of blocks the SMs stay evenly loaded: the ratio of the blocks' work
# stands in for the schedule (and keeps a long sequence's pricing cheap).
SCHEDULED_WAVES = 16


def tiles_read(seq_q: int, seq_k: int, tile_q: int, tile_k: int) -> list[int]:
    """Key tiles each query tile reads under a top-left causal mask (query i sees keys 0..i):
    a key tile wholly above the diagonal is skipped, any other one computed in full."""
    q_tiles, k_tiles = math.ceil(seq_q / tile_q), math.ceil(seq_k / tile_k)
    return [min(k_tiles, math.ceil(min(seq_q, (t + 1) * tile_q) / tile_k)) for t in range(q_tiles)]


@functools.lru_cache(maxsize=4096)
def causal_share(seq_q: int, seq_k: int, tile_q: int, tile_k: int) -> float:
    """The share of a flash kernel's (query tile, key tile) blocks that a causal mask leaves.
    16 query tiles of 2048: 17/32 (0.53); one tile (seq 128): 1.0, the mask saves nothing."""
    read = tiles_read(seq_q, seq_k, tile_q, tile_k)
    k_tiles = math.ceil(seq_k / tile_k)
    return sum(read) / (len(read) * k_tiles) if read and k_tiles else 1.0


@functools.lru_cache(maxsize=4096)
def causal_time_share(
    heads: int,
    seq_q: int,
    seq_k: int,
    tile: tuple[int, int],
    units: int,
    block_tiles: float = 0.0,
) -> float:
    """The causal kernel's time over the unmasked one's (both in key tiles of work per SM),
    its blocks dispatched in launch order to the first free SM (module doc)."""
    read = tiles_read(seq_q, seq_k, *tile)
    k_tiles = math.ceil(seq_k / tile[1])
    if not read or not k_tiles or heads < 1 or units < 1:
        return 1.0
    full = k_tiles + block_tiles
    blocks = heads * len(read)
    if blocks > SCHEDULED_WAVES * units:
        return (sum(read) + block_tiles * len(read)) / (len(read) * full)
    return _makespan([r + block_tiles for r in read] * heads, units) / (
        math.ceil(blocks / units) * full
    )


def _makespan(blocks: list[float], units: int) -> float:
    """When the last block ends, each taken in order by the first SM to fall free."""
    free = [0.0] * min(units, len(blocks))
    for work in blocks:
        heapq.heappush(free, heapq.heappop(free) + work)
    return max(free)
