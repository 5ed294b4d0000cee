import collections
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import zmq

from kpt.wire import Client, Limits, Server
from kpt.wire._stream import StreamReader, preamble, table

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
def short_dir():
    """A directory with a short path: a Unix socket path must fit in 107 bytes."""
    folder = tempfile.mkdtemp(prefix="kw-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["ipc", "unix"])
def local_endpoint(request, short_dir):
    """The same-host endpoint of each transport: ZeroMQ ipc:// and the unix:// stream."""
    return f"{request.param}://{short_dir}/wire.sock"


@pytest.fixture
def server_process(local_endpoint):
    processes = []

    def make(endpoint: str | None = None, *extra: str) -> ServerProcess:
        process = ServerProcess(endpoint or local_endpoint, *extra)
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


@pytest.fixture(params=["tcp", "unix"])
def echo_server(request, short_dir):
    """An in-process echo server: on a random loopback port, or on a unix:// socket."""
    endpoint = "tcp://127.0.0.1:0" if request.param == "tcp" else f"unix://{short_dir}/echo.sock"
    server = Server(endpoint, heartbeat_interval=HEARTBEAT)
    server.register("echo", lambda msg, client: (msg.header, msg.arrays))
    with server:
        yield server


@pytest.fixture
def client(echo_server):
    with Client(echo_server.endpoint, timeout=5, heartbeat_interval=HEARTBEAT) as client:
        yield client


class RawPeer:
    """Sends raw frame lists to a server over either transport and reads raw replies, so tests
    can send what no Client would."""

    def __init__(self, endpoint: str):
        self.unix = endpoint.startswith("unix://")
        if self.unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(endpoint[len("unix://") :])
            self.sock.sendall(preamble(b"raw-peer"))
            self.reader = StreamReader(Limits())
            self.ready: collections.deque = collections.deque()
        else:
            self.context = zmq.Context()
            self.dealer = self.context.socket(zmq.DEALER)
            self.dealer.linger = 0
            self.dealer.sndhwm = self.dealer.rcvhwm = 0
            self.dealer.connect(endpoint)

    def send(self, frames: list) -> None:
        if self.unix:
            self.sock.sendall(table(frames) + b"".join(bytes(f) for f in frames))
        else:
            self.dealer.send_multipart(frames)

    def recv(self, timeout_s: float) -> list:
        """One reply; AssertionError if none comes in time."""
        if not self.unix:
            assert self.dealer.poll(int(timeout_s * 1000)), "no reply in time"
            return self.dealer.recv_multipart()
        self.sock.settimeout(timeout_s)
        while not self.ready:
            self.ready.extend(self.reader.read(self.sock))
        return self.ready.popleft()

    def close(self) -> None:
        if self.unix:
            self.sock.close()
        else:
            self.dealer.close(0)
            self.context.term()


@pytest.fixture
def raw_peer():
    """RawPeer(endpoint), closed after the test (a fixture: test modules cannot import this one)."""
    peers: list[RawPeer] = []

    def make(endpoint: str) -> RawPeer:
        peers.append(RawPeer(endpoint))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()
