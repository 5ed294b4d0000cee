"""kpt.adapters.NAME: NAME chips as the torch device "NAME" (registered on first use)."""

from kpt.adapters.NAME._adapter import NameAdapter
from kpt.adapters.NAME._device import register
from kpt.adapters.NAME._version import __version__

__all__ = ["NameAdapter", "__version__", "register"]
