"""kpt.NAME: ONE LINE SAYING WHAT IT IS."""

from kpt.NAME._version import __version__

__all__ = ["__version__"]
