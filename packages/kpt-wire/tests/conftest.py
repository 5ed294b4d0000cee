import subprocess
import sys
from pathlib import Path

import pytest

from kpt.wire import Client, Server

SERVER_SCRIPT = Path(__file__).with_name("wire_server_process.py")
HEARTBEAT = 0.2  # short, so liveness tests finish quickly


class ServerProcess:
    """A kpt.wire echo server in a real subprocess; killable and restartable."""

    def __init__(self, endpoint: str, *extra: str):
        self.endpoint = endpoint
        self.extra = extra
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), self.endpoint, str(HEARTBEAT), *self.extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.startswith("ready "), f"server process did not start: {line!r}"
        self.endpoint = line.split()[1]
        return self.endpoint

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.process.stdin.close()
            self.process.wait(5)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            pass
        self.kill()
        self.process.stdout.close()


@pytest.fixture
def server_process(tmp_path):
    processes = []

    def make(endpoint: str | None = None, *extra: str) -> ServerProcess:
        process = ServerProcess(endpoint or f"ipc://{tmp_path}/wire.sock", *extra)
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


@pytest.fixture
def echo_server():
    """An in-process server on a random loopback port with echo, fail, crash handlers."""
    server = Server("tcp://127.0.0.1:0", heartbeat_interval=HEARTBEAT)
    server.register("echo", lambda msg, client: (msg.header, msg.arrays))
    with server:
        yield server


@pytest.fixture
def client(echo_server):
    with Client(echo_server.endpoint, timeout=5, heartbeat_interval=HEARTBEAT) as client:
        yield client
