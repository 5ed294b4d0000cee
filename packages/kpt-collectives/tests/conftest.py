"""A shared simulator daemon (h100-sxm + mi300x, torch executor) for the multi-process tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import kpt.sim

# The rank helpers (ranks.py, rank_jobs.py) sit beside the tests; nox imports tests by path
# (--import-mode=importlib), which puts no folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    handle = kpt.sim.start_daemon(profile="h100-sxm:1,mi300x:1", devices=2, executor="torch")
    try:
        yield handle.endpoint
    finally:
        handle.stop()
