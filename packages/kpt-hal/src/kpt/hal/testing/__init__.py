"""kpt.hal.testing: the conformance kit every adapter runs, and vendor forks inherit.

Subclass it in your adapter package's tests/test_standard.py::

    from kpt.hal.testing import AdapterConformance
    from kpt.adapters.acme import AcmeAdapter

    class TestAcmeStandard(AdapterConformance):
        adapter = AcmeAdapter

or run it against an installed adapter by name::

    pytest --kpt-adapter cpu --pyargs kpt.hal.testing
"""

from __future__ import annotations

from typing import Any

__all__ = ["AdapterConformance", "matmul_tolerance", "resolve_adapter"]


def __getattr__(name: str) -> Any:
    # Lazy, so that assertion rewriting (registered by the pytest plugin) applies to _suite.
    if name in __all__:
        from kpt.hal.testing import _suite

        return getattr(_suite, name)
    raise AttributeError(f"module 'kpt.hal.testing' has no attribute {name!r}")
