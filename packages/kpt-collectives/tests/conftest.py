"""A shared simulator daemon (h100-sxm + mi300x, torch executor) for the multi-process tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import kpt.sim


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    handle = kpt.sim.start_daemon(profile="h100-sxm:1,mi300x:1", devices=2, executor="torch")
    try:
        yield handle.endpoint
    finally:
        handle.stop()
