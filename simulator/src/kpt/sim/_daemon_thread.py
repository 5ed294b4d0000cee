"""A daemon served on a background thread of this process (tests, benchmarks, notebooks)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any

from kpt.sim._daemon import SimDaemon
from kpt.sim._executors import load_executor
from kpt.sim._simulator import Simulator
from kpt.wire import Server


@contextlib.contextmanager
def serve_in_thread(
    profile: Any = "h100-sxm",
    devices: int | None = 1,
    numerics: bool = True,
    executor: str = "numpy",
    heartbeat_interval: float = 1.0,
    **sim_options: Any,
) -> Iterator[tuple[str, SimDaemon]]:
    """Yield (endpoint, daemon): a daemon on a unix:// endpoint in a tmp dir, closed on exit.

    Handlers run on the wire server's thread, so the daemon shares this process's GIL; use
    start_daemon() for a separate process.
    """
    sim = Simulator(profile, devices, **sim_options)
    daemon = SimDaemon(
        sim, load_executor(executor), numerics, executor, heartbeat_interval=heartbeat_interval
    )
    with tempfile.TemporaryDirectory(prefix="kpt-sim-") as folder:
        server = Server(
            f"unix://{folder}/daemon.sock",
            heartbeat_interval=heartbeat_interval,
            on_client_gone=daemon.client_gone,
        )
        daemon.register(server)
        server.start()
        try:
            yield server.endpoint, daemon
        finally:
            server.close()
