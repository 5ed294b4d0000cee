"""Fuzz the daemon endpoint: malformed requests get clear errors, never crash or wedge it."""

from __future__ import annotations

import socket

import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpt.sim import SimClient, TensorRef
from kpt.sim._daemon_thread import serve_in_thread
from kpt.wire import Client, RemoteError

CALLS = (
    "hello", "devices", "alloc", "free", "write", "read", "event_time", "synchronize", "now",
    "memory_stats", "reset_peak", "dump_trace", "record_ops", "dump_ops",
)  # fmt: skip
CASTS = ("launch", "copy", "record_event", "wait_event", "collective", "alloc_async", "batch")
FIELDS = (
    "device", "nbytes", "buffer", "offset", "stream", "op", "inputs", "outputs", "attrs",
    "cost", "src", "dst", "event", "kind", "at_us", "after_ops", "link", "factor", "ops",
    "prelude", "root", "algorithm", "alias",
)  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, 2, -1, 4, 16, 1 << 40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["add", "matmul", "float32", "bfloat16", "device_lost", "hang", "x"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=20)
refs = st.lists(
    st.tuples(
        st.integers(-2, 6), st.integers(-8, 64), st.sampled_from(["float32", "int8", "nope"]),
        st.lists(st.integers(-2, 5), max_size=3), st.lists(st.integers(-4, 8), max_size=3),
    ).map(list),
    max_size=3,
)  # fmt: skip
flat_headers = st.dictionaries(st.sampled_from(FIELDS), values | refs, max_size=6)
batches = st.lists(
    st.tuples(st.sampled_from([*CASTS, "free", 3]), flat_headers).map(list), max_size=4
)
headers = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=5).filter(lambda k: not k.startswith("_")),
    values | refs | batches,
    max_size=6,
)
arrays = st.lists(
    st.sampled_from([np.zeros(4, np.uint8), np.arange(3, dtype=np.float32), np.zeros(0, np.int8)]),
    max_size=2,
)


def test_malformed_requests_are_refused_and_the_daemon_keeps_serving():
    with serve_in_thread("test-asic", 2, heartbeat_interval=0.5) as (endpoint, _):
        bystander = SimClient(endpoint)
        kept = bystander.alloc(0, 16)
        bystander.write(kept, 0, np.arange(4, dtype=np.float32))
        fuzzer = Client(endpoint, timeout=10)
        fuzzer.call("alloc", {"device": 0, "nbytes": 64})
        fuzzer.call("alloc", {"device": 1, "nbytes": 64})
        internal: list[str] = []

        @settings(
            max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(kind=st.sampled_from(CALLS + CASTS), header=headers, frames=arrays)
        def send(kind, header, frames):
            try:
                if kind in CASTS:
                    fuzzer.cast(kind, header, frames)
                    fuzzer.call("synchronize", {})
                else:
                    fuzzer.call(kind, header, frames)
            except RemoteError as exc:
                if exc.code == "internal":
                    internal.append(f"{kind} {header!r}: {exc.message}")
                assert exc.message  # every refusal says why

        send()
        fuzzer.call("reset_peak", {"device": 0})
        fuzzer.close()
        assert not internal, "\n".join(internal[:5])

        # Raw garbage straight onto the socket: dropped or answered by the wire layer.
        _send_raw_garbage(endpoint)

        # Everyone else is still served, with their values intact (the fuzzer never reset).
        assert bystander.read(kept, 0, 16).view(np.float32).tolist() == [0, 1, 2, 3]
        x = TensorRef.contiguous(kept, "float32", (4,))
        bystander.launch(0, "add", [x, x], [x])
        assert bystander.read(kept, 0, 16).view(np.float32).tolist() == [0, 2, 4, 6]
        bystander.close()


def test_malformed_fault_injections_are_refused_with_reasons():
    with serve_in_thread("test-asic", 2, heartbeat_interval=0.5) as (endpoint, daemon):
        fuzzer = Client(endpoint, timeout=10)
        owner = {"token": daemon.admin_token}  # the fuzzer may inject: its faults are checked
        internal: list[str] = []

        @settings(
            max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(header=headers)
        def send(header):
            try:
                fuzzer.call("inject_fault", {**header, **owner})
                fuzzer.call("synchronize", {})
            except RemoteError as exc:
                if exc.code == "internal":
                    internal.append(f"{header!r}: {exc.message}")
                assert exc.message
            fuzzer.call("reset", owner)  # a fault that took effect must not leak into the next one

        send()
        fuzzer.close()
        assert not internal, "\n".join(internal[:5])


def _send_raw_garbage(endpoint: str) -> None:
    """Frames no client would send (ZeroMQ), or bytes that break the stream framing (unix://)."""
    garbage = ([b""], [b"KPT", b"\xff" * 9], [b"\x00" * 3] * 70, [b"hello", b"\xc1"])
    if endpoint.startswith("unix://"):
        for preface in (b"", b"KPTU\x03abc"):  # without and with a client preamble
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(endpoint[len("unix://") :])
            raw.sendall(preface + b"".join(b"".join(frames) for frames in garbage))
            raw.close()
        return
    context = zmq.Context()
    raw = context.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(endpoint)
    for frames in garbage:
        raw.send_multipart(frames)
    raw.close(0)
    context.term()
