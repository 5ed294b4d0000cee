"""Compatibility with code written against the old `HardwareAdapter` object."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch


class HardwareAdapter:
    """The old single-object entry point, now a thin view over kpt.hal.

    HardwareAdapter().get_hal() returns the kpt.hal module; the few old methods delegate to it.
    """

    def __init__(self) -> None:
        import kpt.hal

        self._hal = kpt.hal

    def get_hal(self) -> ModuleType:
        return self._hal

    def is_available(self) -> bool:
        """True when a device other than the host CPU is usable."""
        return any(d.device_type != "cpu" for d in self._hal.devices())

    def device_count(self) -> int:
        return len(self._hal.devices())

    def get_device(self, **needs: Any) -> torch.device:
        """The torch.device of the best device meeting `needs` (see kpt.hal.select)."""
        return self._hal.select(**needs).torch_device
