"""How much device memory an engine's weights and KV pool take, checked before anything loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import kpt.hal as hal
from kpt.serve._loader import checkpoint_bytes, model_bytes
from kpt.serve._models import KVCache

if TYPE_CHECKING:
    from kpt.serve._engine import Engine

# Share of free memory the KV pool takes after the weights are loaded. On the host CPU, and on
# a simulated device whose bytes live in host memory, the pool is sized from host memory more
# modestly: the machine is shared with everything else running on it.
ACCELERATOR_KV_FRACTION = 0.9
HOST_KV_FRACTION = 0.1


def check_weights_fit(engine: Engine, model_dir) -> None:
    """A MemoryError a person can act on, before loading weights that cannot fit."""
    config = engine.config
    quantization = config.quantization
    if config.load_format == "dummy" or quantization is not None:
        # A checkpoint's layers are quantized as they are read; a dummy model is made in
        # full precision first, then quantized layer by layer.
        loaded = None if config.load_format == "dummy" else quantization
        need = model_bytes(engine.model_config, engine.dtype, loaded)
    else:
        need = checkpoint_bytes(model_dir, engine.dtype)
    free, total = device_memory(engine)
    if need > free:
        form = f"{engine.dtype}" + (f" with {quantization} weights" if quantization else "")
        raise MemoryError(
            f"the weights of {model_dir} take {_size(need)} in {form} but "
            f"{engine.device} has {_size(free)} free of {_size(total)}; "
            "pick a device with more memory, a smaller dtype or quantization='int8'"
        )


def device_memory(engine: Engine) -> tuple[int, int]:
    """(free, total) bytes of the engine's device, as its kpt.hal adapter reports them."""
    adapter = hal.registry().adapter(engine.device_info.adapter)
    return adapter.memory_info(engine.device_info.index)


def kv_blocks_for(engine: Engine) -> int:
    """KV blocks the pool gets: the configured count, else a share of free memory."""
    config = engine.config
    bs = config.block_size
    per_block = KVCache.bytes_per_block(engine.model_config, bs, engine.dtype)
    if config.num_kv_blocks is not None:
        blocks = config.num_kv_blocks
    else:
        free, _ = device_memory(engine)
        if engine.device_info.kind in ("host", "simulated"):
            host_free, _ = hal.registry().adapter("cpu").memory_info(0)
            fraction = config.kv_memory_fraction or HOST_KV_FRACTION
            free = min(free, host_free)
        else:
            fraction = config.kv_memory_fraction or ACCELERATOR_KV_FRACTION
        # No more than every seat filled to the longest sequence could use.
        most = config.max_num_seqs * -(-engine.max_model_len // bs)
        blocks = min(int(free * fraction) // per_block, most)
    if blocks < 1:
        raise MemoryError(
            f"no room for a KV block ({per_block} bytes each) on {engine.device}; "
            "free memory or set EngineConfig(num_kv_blocks=...)"
        )
    return blocks


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    return f"{count} B"
