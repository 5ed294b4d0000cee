"""Over 10,000 malformed messages at a live server process: each refused or dropped, none fatal."""

import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpt.wire import PROTOCOL, VERSION, decode, encode

MAX_MESSAGE_BYTES = 1 << 20  # the server's limits in this test (see wire_server_process.py)
BATCH = 55
BATCHES = int(__import__("os").environ.get("FUZZ_BATCHES", 200))
BIG_FRAME = bytes(600_000)  # two of these pass each frame's limit but not the message's

msgpack_ints = st.integers(-(2**63), 2**64 - 1)
headers = st.dictionaries(
    st.text(st.characters(codec="ascii", categories=["Ll"]), min_size=1, max_size=6),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.binary(max_size=8)),
    max_size=4,
)
arrays = st.lists(
    st.builds(np.zeros, st.integers(0, 8), st.sampled_from(["float32", "int8", "uint64"])),
    max_size=3,
)
shapes = st.lists(st.integers(0, 2**64 - 1) | st.integers(-5, 5), max_size=20)
dtype_names = st.sampled_from(["float32", "object", "O", "<U4", "V8", "bfloat16", "", "int4"])
descriptor = st.fixed_dictionaries(
    {"dtype": dtype_names | st.text(max_size=6), "shape": shapes | msgpack_ints},
    optional={"order": st.sampled_from(["<", ">", "|", "=", "?"])},
)


def _header_with(descriptors) -> bytes:
    return msgpack.packb({"_arrays": descriptors})


MUTATIONS = {
    "truncated": lambda draw, f: f[: draw(st.integers(0, len(f) - 1))],
    "wrong protocol": lambda draw, f: [draw(st.binary(max_size=8)), *f[1:]],
    "wrong version": lambda draw, f: [
        PROTOCOL + struct.pack(">H", draw(st.integers(0, 65535).filter(lambda v: v != VERSION))),
        *f[1:],
    ],
    "bad type": lambda draw, f: [f[0], draw(st.binary(max_size=80)), *f[2:]],
    "bad request id": lambda draw, f: [
        *f[:2],
        msgpack.packb({"_rid": draw(st.integers(-(2**63), -1) | st.text(max_size=4) | st.none())}),
        *f[3:],
    ],
    "bad msgpack": lambda draw, f: [*f[:2], draw(st.binary(max_size=64)), *f[3:]],
    "hostile msgpack": lambda draw, f: [
        *f[:2],
        draw(
            st.sampled_from(
                [
                    b"\xdf\xff\xff\xff\xff",
                    b"\xc6\xff\xff\xff\xff",
                    b"\x91" * 5000,
                    b"\xdd\xff\xff\xff\xff",
                    b"\xc7\xff\x01",
                    b"\x81\x01\x02",
                ]
            )
        ),
    ],
    "header not a map": lambda draw, f: [
        *f[:2],
        msgpack.packb(draw(msgpack_ints | st.lists(msgpack_ints) | st.text())),
    ],
    "huge or bad shape": lambda draw, f: [
        *f[:2],
        _header_with([draw(descriptor)]),
        draw(st.binary(max_size=16)),
    ],
    "descriptor count mismatch": lambda draw, f: [
        *f[:2],
        _header_with(draw(st.lists(descriptor, max_size=3))),
        *draw(st.lists(st.binary(max_size=8), max_size=4)),
    ],
    "bin keys": lambda draw, f: [
        *f[:2],
        msgpack.packb({"_rid": 7, **{k.encode(): v for k, v in draw(headers).items()}, b"k": 1}),
        *f[3:],
    ],
    "zero size, huge dims": lambda draw, f: [
        *f[:2],
        _header_with(
            [
                {
                    "dtype": "float32",
                    "shape": [
                        0,
                        *draw(st.lists(st.integers(2**40, 2**64 - 1), min_size=1, max_size=3)),
                    ],
                }
            ]
        ),
        b"",
    ],
    "oversized header": lambda draw, f: [*f[:2], msgpack.packb({"x": "a" * 5000}), *f[3:]],
    "too many frames": lambda draw, f: f + [b""] * draw(st.integers(13, 40)),
    "oversized message": lambda draw, f: [*f[:3], BIG_FRAME, BIG_FRAME],
    "garbage": lambda draw, f: draw(st.lists(st.binary(max_size=32), min_size=1, max_size=10)),
}


@st.composite
def malformed(draw):
    frames = [bytes(frame) for frame in encode(
        "echo", draw(headers), draw(arrays), request_id=draw(st.integers(0, 2**64 - 1))
    )]  # fmt: skip
    mutate = MUTATIONS[draw(st.sampled_from(sorted(MUTATIONS)))]
    return mutate(draw, frames) or [b""]


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def target(server_process, raw_peer):
    server = server_process(None, str(MAX_MESSAGE_BYTES))
    return server, raw_peer(server.start())


def _sentinel_round_trip(peer, sentinel: int) -> int:
    """Send a valid request; read replies up to its answer. Returns replies seen before it."""
    peer.send(encode("echo", {"sentinel": sentinel}, request_id=sentinel))
    before = 0
    while True:
        reply = decode(peer.recv(10))  # every answer is itself well-formed
        if reply.request_id == sentinel and reply.type == "echo":
            assert reply.header == {"sentinel": sentinel}
            return before
        assert reply.type in ("_error", "echo"), reply
        if reply.type == "_error":
            assert reply.header["code"] in ("protocol", "version", "limit", "unknown_type"), reply
            assert reply.header["message"]
        before += 1


def test_malformed_messages_never_take_the_server_down(target):
    server, peer = target
    sent = 0
    rss = []

    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(malformed(), min_size=BATCH, max_size=BATCH))
    def send_batch(batch):
        nonlocal sent
        for frames in batch:
            peer.send(frames)
        sent += len(batch)
        answered = _sentinel_round_trip(peer, sentinel=(1 << 63) + sent)
        assert answered <= len(batch)  # at most one answer each: errors or drops
        assert server.process.poll() is None
        rss.append(_rss_bytes(server.process.pid))

    send_batch()
    assert sent >= 10_000
    assert max(rss) - rss[0] < 64 << 20, f"server memory grew from {rss[0]} to {max(rss)} bytes"
    assert _sentinel_round_trip(peer, sentinel=1) == 0  # still serves valid requests
