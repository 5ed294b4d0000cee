"""A real simulator daemon (`kpt-sim serve`) for the integration tests, stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpt.sim import SimClient

STARTUP_S = 60.0


def _wait_until_serving(endpoint: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kpt-sim serve exited with {process.returncode}")
        try:  # SimClient itself fails fast (within 2 s) while nothing answers yet
            with SimClient(endpoint, timeout=2.0) as client:
                client.devices()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"kpt-sim serve did not answer on {endpoint} within {STARTUP_S} s")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """Serve h100-sxm + mi300x with the torch executor; yield the endpoint."""
    endpoint = f"ipc://{tmp_path}/sim.sock"
    command = [
        sys.executable, "-m", "kpt.sim", "serve", "--profile", "h100-sxm:1,mi300x:1",
        "--endpoint", endpoint, "--executor", "torch", "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(endpoint, process)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_python(code: str, endpoint: str, **env: str) -> subprocess.Popen:
    """Start `code` in a fresh interpreter using the daemon at `endpoint` (plus `env`)."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=dict(os.environ, KPT_SIM_ENDPOINT=endpoint, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(child: subprocess.Popen, timeout: float = 180.0) -> str:
    """Wait for a child started by `start_python`; return its stdout, or fail with its stderr."""
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate(timeout=10)
        raise AssertionError(f"child ran over {timeout} s:\n{out}\n{err}") from None
    if child.returncode != 0:
        raise AssertionError(f"child failed ({child.returncode}):\n{out}\n{err}")
    return out


@pytest.fixture
def python_on():
    """`python_on(code, endpoint, **env) -> stdout`: run code in a child process on the daemon."""
    return lambda code, endpoint, **env: finish(start_python(code, endpoint, **env))


@pytest.fixture
def spawn() -> Iterator:
    """`spawn(code, endpoint, **env)` starts a child; `.result()` waits for its stdout.
    Children still running at the end of the test are killed."""
    children: list[subprocess.Popen] = []

    class Child:
        def __init__(self, code: str, endpoint: str, **env: str) -> None:
            self.process = start_python(code, endpoint, **env)
            children.append(self.process)

        def result(self) -> str:
            return finish(self.process)

    yield Child
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
