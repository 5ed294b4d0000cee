"""Several models on one worker under a memory budget: loaded on demand, least recently used
evicted first, never one with requests still in it.

A model's footprint is its weights in the engine's dtype plus its KV pool (num_kv_blocks
blocks; under a budget every model's pool is sized up front, so the pools of the models that
fit are sized together and nothing grows behind the budget's back).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kpt.serve._config import load_config
from kpt.serve._engine import Engine
from kpt.serve._loader import checkpoint_bytes, model_bytes

log = logging.getLogger("kpt.serve.fleet.models")

DEFAULT_BUDGET_KV_BLOCKS = 64  # each model's KV pool under a budget when the spec gives none


class ModelBusy(RuntimeError):
    """The model does not fit until a model still serving requests drains; retry later."""


def footprint_bytes(
    model_dir: str | Path,
    dtype: torch.dtype,
    num_kv_blocks: int,
    block_size: int = 16,
    quantization: str | None = None,
) -> int:
    """Weights in `dtype` (linear ones quantized by `quantization`) plus a KV pool of
    `num_kv_blocks` blocks, read from the folder."""
    config = load_config(model_dir)
    element = torch.empty((), dtype=dtype).element_size()
    kv = config.kv_bytes_per_token * block_size * element * num_kv_blocks
    if quantization is not None:
        return model_bytes(config, dtype, quantization) + kv
    try:
        weights = checkpoint_bytes(model_dir, dtype)
    except FileNotFoundError:  # config.json alone, served with load_format "dummy"
        weights = model_bytes(config, dtype)
    return weights + kv


def catalog_entry(model_dir: str | Path) -> dict:
    """What the router needs of a model it has not loaded: its limits and tokenizer."""
    config = load_config(model_dir)
    return {
        "max_model_len": config.max_position,
        "vocab_size": config.vocab_size,
        "has_tokenizer": (Path(model_dir) / "tokenizer.json").is_file(),
    }


@dataclass
class LoadedModel:
    engine: Engine
    bytes: int
    loaded_at: float


class ModelSet:
    """The models one worker may serve (`catalog`: name -> folder) and those loaded now."""

    def __init__(
        self,
        catalog: dict[str, str],
        make_engine: Callable[[str, str], Engine],
        *,
        budget_bytes: int | None = None,
        dtype: torch.dtype = torch.float32,
        num_kv_blocks: int | None = None,
        quantization: str | None = None,
    ) -> None:
        if not catalog:
            raise ValueError("a worker needs at least one model (catalog is empty)")
        self.catalog = dict(catalog)
        self.budget_bytes = budget_bytes
        self._make_engine = make_engine
        self._dtype = dtype
        self._quantization = quantization
        self._kv_blocks = num_kv_blocks or DEFAULT_BUDGET_KV_BLOCKS
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recent first
        self.loads = 0
        self.evictions = 0
        if budget_bytes is not None:
            for name, folder in self.catalog.items():
                need = self.estimate(name)
                if need > budget_bytes:
                    raise ValueError(
                        f"model {name!r} ({folder}) needs {need / 2**20:.1f} MiB (weights + "
                        f"{self._kv_blocks} KV blocks) but the worker's memory budget is "
                        f"{budget_bytes / 2**20:.1f} MiB; raise memory_budget_mb or give it "
                        "fewer KV blocks"
                    )

    def estimate(self, name: str) -> int:
        return footprint_bytes(
            self.catalog[name], self._dtype, self._kv_blocks, quantization=self._quantization
        )

    @property
    def kv_blocks(self) -> int | None:
        """Blocks each model's pool gets: fixed under a budget, the engine's choice without."""
        return self._kv_blocks if self.budget_bytes is not None else None

    def loaded(self) -> list[str]:
        return list(self._loaded)

    def engines(self) -> list[tuple[str, Engine]]:
        return [(name, entry.engine) for name, entry in self._loaded.items()]

    def used_bytes(self) -> int:
        return sum(entry.bytes for entry in self._loaded.values())

    def get(self, name: str) -> Engine | None:
        entry = self._loaded.get(name)
        return None if entry is None else entry.engine

    def ensure(self, name: str) -> Engine:
        """The model's engine, loading it (and evicting idle models) when needed.

        Raises KeyError for a model not in the catalog, ModelBusy when it cannot fit until a
        busy model drains."""
        if name not in self.catalog:
            raise KeyError(
                f"model {name!r} is not served by this worker; it serves "
                f"{', '.join(sorted(self.catalog))}"
            )
        entry = self._loaded.get(name)
        if entry is not None:
            self._loaded.move_to_end(name)
            return entry.engine
        need = self.estimate(name)
        self._make_room(name, need)
        started = time.perf_counter()
        engine = self._make_engine(name, self.catalog[name])
        self._loaded[name] = LoadedModel(engine, need, time.time())
        self.loads += 1
        log.info("loaded %s in %.2fs", name, time.perf_counter() - started)
        return engine

    def next_to_evict(self, excluding: str) -> str | None:
        """The loaded model that makes room next: the least recently used other than
        `excluding` (the one waiting for room)."""
        return next((name for name in self._loaded if name != excluding), None)

    def touch(self, name: str) -> None:
        if name in self._loaded:
            self._loaded.move_to_end(name)

    def _make_room(self, name: str, need: int) -> None:
        if self.budget_bytes is None:
            return
        while self.used_bytes() + need > self.budget_bytes:
            idle = [n for n, e in self._loaded.items() if not e.engine.has_unfinished]
            if not idle:
                raise ModelBusy(
                    f"model {name!r} needs {need / 2**20:.1f} MiB; "
                    f"{self.used_bytes() / 2**20:.1f} of {self.budget_bytes / 2**20:.1f} MiB "
                    f"are held by models still serving ({', '.join(self._loaded)})"
                )
            self.evict(idle[0])  # the least recently used idle model

    def evict(self, name: str) -> None:
        entry = self._loaded.pop(name)
        del entry
        self.evictions += 1
        # The engine's tensors go now, before the next model's are allocated. Engines free
        # by reference counting, but a heap frozen by freeze_gc would keep whatever cycle
        # another library made through them: unfreeze for this one full collection.
        frozen = gc.get_freeze_count() > 0
        gc.unfreeze()
        gc.collect()
        if frozen:
            gc.freeze()
        log.info("evicted %s", name)
