"""torch.NAME: what torch and kpt.hal ask a device module for (set up by register())."""

from __future__ import annotations

from typing import Any

import torch

from kpt.adapters.NAME._runtime import runtime


def _index(device: Any = None) -> int:
    if device is None:
        return 0
    return device if isinstance(device, int) else (torch.device(device).index or 0)


def is_available() -> bool:
    return runtime().missing() is None and runtime().device_count() > 0


def device_count() -> int:
    return runtime().device_count()


def current_device() -> int:
    return 0


def synchronize(device: Any = None) -> None:
    runtime().synchronize(_index(device))


def memory_allocated(device: Any = None) -> int:
    return runtime().allocated[_index(device)]


def mem_get_info(device: Any = None) -> tuple[int, int]:
    index = _index(device)
    total = runtime().memory_total(index)
    return total - runtime().allocated[index], total


def empty_cache() -> None:
    """Nothing cached: memory goes back to the runtime as soon as a tensor dies."""


def _is_in_bad_fork() -> bool:
    return False


def manual_seed_all(seed: int) -> None:
    """Kernels run on the host here, so torch.manual_seed already seeds them."""
