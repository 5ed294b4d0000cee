"""kpt.abtest: statistics for A/B experiments, sequential tests and benchmark regressions."""

from kpt.abtest._version import __version__

__all__ = ["__version__"]
