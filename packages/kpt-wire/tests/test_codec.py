import struct

import ml_dtypes
import msgpack
import numpy as np
import pytest

from kpt.wire import PROTOCOL, VERSION, Limits, Message, ProtocolError, decode, encode

PREAMBLE = PROTOCOL + struct.pack(">H", VERSION)


def _roundtrip(*arrays, header=None, request_id=3) -> Message:
    return decode(encode("t.x", header or {}, arrays, request_id=request_id))


@pytest.mark.parametrize(
    "dtype",
    [
        "bool",
        "int8",
        "uint16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
        "complex64",
        ml_dtypes.bfloat16,
        ml_dtypes.float8_e4m3fn,
        ">f4",
        ">i8",
        "<f8",
    ],
)
def test_arrays_round_trip_with_dtype_shape_and_byte_order(dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    got = _roundtrip(array).arrays[0]
    assert got.dtype == array.dtype
    assert got.shape == (2, 3, 4)
    assert got.tobytes() == array.tobytes()


def test_header_type_and_request_id_survive():
    msg = _roundtrip(header={"nbytes": 1024, "name": "x", "nested": {"a": [1, 2]}, "b": b"\0"})
    assert msg.type == "t.x" and msg.request_id == 3
    assert msg.header == {"nbytes": 1024, "name": "x", "nested": {"a": [1, 2]}, "b": b"\0"}


def test_numpy_scalars_and_tuples_in_header_become_plain_values():
    msg = _roundtrip(header={"n": np.int64(5), "f": np.float32(0.5), "shape": (2, 3)})
    assert msg.header == {"n": 5, "f": 0.5, "shape": [2, 3]}


def test_send_is_zero_copy_and_receive_is_a_view():
    array = np.arange(1 << 16, dtype=np.float32)
    frames = encode("t", {}, [array])
    assert len(frames) == 4  # protocol, type, header, one array frame
    assert np.shares_memory(np.frombuffer(frames[3], dtype=np.float32), array)
    received = decode(frames).arrays[0]
    assert np.shares_memory(received, array)
    assert not received.flags.writeable


def test_non_contiguous_and_empty_arrays_and_raw_bytes():
    strided = np.arange(20.0).reshape(4, 5)[:, ::2]
    empty = np.zeros((0, 7), dtype=np.int32)
    got = _roundtrip(strided, empty, b"abc").arrays
    np.testing.assert_array_equal(got[0], strided)
    assert got[1].shape == (0, 7) and got[1].dtype == np.int32
    assert got[2].tobytes() == b"abc" and got[2].dtype == np.uint8


@pytest.mark.parametrize(
    "bad",
    [
        np.array(["a"], dtype=object),
        np.zeros(2, dtype="U3"),
        np.zeros(2, dtype=[("a", "i4")]),
        np.zeros(2, "M8[s]"),
    ],
)
def test_encode_refuses_dtypes_that_are_not_plain_numbers(bad):
    with pytest.raises(ValueError, match="cannot go on the wire"):
        encode("t", {}, [bad])


@pytest.mark.parametrize(
    ("type_", "header", "error"),
    [
        ("Bad Type", {}, ValueError),
        ("", {}, ValueError),
        ("t", {1: 2}, TypeError),
        ("t", {"_arrays": []}, ValueError),
        ("t", {"x": object()}, TypeError),
        ("x" * 65, {}, ValueError),
    ],
)
def test_encode_refuses_bad_types_and_headers_by_name(type_, header, error):
    with pytest.raises(error):
        encode(type_, header)


def test_unknown_header_fields_are_ignored_and_missing_byte_order_defaults():
    frames = encode("t", {"keep": 1}, [np.arange(3, dtype=np.uint8)])
    header = msgpack.unpackb(frames[2])
    header["_arrays"][0]["future_field"] = "ignored"
    del header["_arrays"][0]["order"]  # uint8 has no byte order: default '|' applies
    header["_future_top_level"] = {"x": 1}
    frames[2] = msgpack.packb(header)
    msg = decode(frames)
    assert msg.header["keep"] == 1
    assert msg.arrays[0].tolist() == [0, 1, 2]


def test_version_mismatch_names_both_versions():
    frames = encode("t", {}, request_id=9)
    frames[0] = PROTOCOL + struct.pack(">H", VERSION + 1)
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert info.value.code == "version" and info.value.request_id == 9
    assert f"version {VERSION + 1}" in str(info.value) and f"version {VERSION}" in str(info.value)


def _with_descriptor(**descriptor):
    frames = encode("t", {}, [np.zeros(4, dtype=np.float32)], request_id=1)
    header = msgpack.unpackb(frames[2])
    header["_arrays"][0].update(descriptor)
    frames[2] = msgpack.packb(header)
    return frames


@pytest.mark.parametrize(
    ("descriptor", "match"),
    [
        ({"shape": [1 << 40, 1 << 40, 1 << 40]}, "needs"),
        ({"shape": [5]}, "needs"),
        ({"shape": [-4]}, "non-negative"),
        ({"shape": [1] * 17}, "at most 16"),
        ({"shape": "4"}, "shape"),
        ({"dtype": "object"}, "not allowed"),
        ({"dtype": "<U1"}, "not allowed"),
        ({"order": "?"}, "not allowed"),
    ],
)
def test_bad_array_descriptors_are_refused_without_allocating(descriptor, match):
    with pytest.raises(ProtocolError, match=match):
        decode(_with_descriptor(**descriptor))


@pytest.mark.parametrize("shape", [[0, 1 << 62], [0, 1 << 40, 1 << 40], [1 << 63, 0]])
def test_a_zero_size_array_numpy_cannot_shape_is_a_protocol_error(shape):
    # Zero bytes match the empty frame, but numpy refuses the shape: that ValueError escaped
    # decode, and a server dropped the message without an answer.
    frames = encode("t", {}, [np.zeros(0, dtype=np.float32)], request_id=5)
    header = msgpack.unpackb(frames[2])
    header["_arrays"][0]["shape"] = shape
    frames[2] = msgpack.packb(header)
    with pytest.raises(ProtocolError, match="no shape numpy can hold") as info:
        decode(frames)
    assert info.value.code == "protocol" and info.value.request_id == 5


def test_limits_are_checked_before_decoding():
    small = Limits(max_frames=4, max_header_bytes=64, max_message_bytes=1000, max_array_dims=2)
    too_many = encode("t", {}, [b"a", b"b"], request_id=12)
    with pytest.raises(ProtocolError, match="5 frames, over the limit of 4") as info:
        decode(too_many, Limits(max_frames=4))
    assert info.value.request_id == 12  # read from the header, so the sender can be answered
    with pytest.raises(ProtocolError, match=r"header is .* over the limit of 64"):
        decode(encode("t", {"x": "y" * 100}), small)
    with pytest.raises(ProtocolError, match="bytes, over the limit of 1000"):
        decode(encode("t", {}, [np.zeros(200)]), small)
    with pytest.raises(ProtocolError, match="at most 2 dimensions"):
        decode(encode("t", {}, [np.zeros((1, 1, 1))]), small)


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"KPTW"],
        [b"junk", b"t", b"\x80"],
        [PREAMBLE, b"t"],
        [PREAMBLE, b"\xff\xfe", b"\x80"],
        [PREAMBLE, b"t", b"\xc1"],
        [PREAMBLE, b"t", msgpack.packb([1, 2])],
        [PREAMBLE, b"t", msgpack.packb({1: 2})],
        [PREAMBLE, b"t", msgpack.packb({b"bin key": 2})],
        [PREAMBLE, b"t", msgpack.packb({"_rid": 3, b"bin key": 2})],
        [PREAMBLE, b"t", msgpack.packb({"_rid": -1})],
        [PREAMBLE, b"t", msgpack.packb({"_rid": 1.5})],
        [PREAMBLE, b"t", msgpack.packb({"_rid": "7"})],
        [PREAMBLE, b"t", msgpack.packb({}), b"orphan array frame"],
    ],
)
def test_malformed_envelopes_raise_protocol_error(frames):
    with pytest.raises(ProtocolError):
        decode(frames)


def test_request_id_travels_in_the_header_and_a_cast_carries_none():
    frames = encode("t", {"a": 1}, request_id=2**64 - 1)
    assert len(frames) == 3  # protocol, type, header: no frame of its own
    assert msgpack.unpackb(frames[2]) == {"a": 1, "_rid": 2**64 - 1}
    assert decode(frames).request_id == 2**64 - 1
    cast = encode("t", {"a": 1})
    assert "_rid" not in msgpack.unpackb(cast[2])  # absent means 0: a cast
    assert decode(cast).request_id == 0
    for bad in (-1, 2**64, 1.0, True):
        with pytest.raises(ValueError, match="request_id"):
            encode("t", {}, request_id=bad)
    with pytest.raises(ValueError, match="reserved"):
        encode("t", {"_rid": 5})


def test_a_refused_header_still_names_its_request_id_for_the_answer():
    big = encode("t", {"x": "y" * 5000}, request_id=41)
    with pytest.raises(ProtocolError, match="over the limit") as info:
        decode(big, Limits(max_header_bytes=1000))
    assert info.value.request_id == 41  # _rid comes first: read without decoding the rest
    broken = [*big[:2], big[2][:-10]]  # truncated msgpack after a readable _rid
    with pytest.raises(ProtocolError, match="not valid msgpack") as info:
        decode(broken)
    assert info.value.request_id == 41
    reordered = [*big[:2], msgpack.packb({"x": 1, "_rid": 41}) + b"\xc1"]
    with pytest.raises(ProtocolError) as info:
        decode(reordered)
    assert info.value.request_id is None  # not first: a refused header is not searched


def test_limits_validate_their_values():
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=2)
    with pytest.raises(ValueError, match="max_header_bytes"):
        Limits(max_header_bytes=0)


def test_a_failed_encode_leaves_nothing_behind_for_the_next_one():
    with pytest.raises(TypeError, match="object"):
        encode("t", {"a": [1, object()]})
    assert decode(encode("t", {"b": 2})).header == {"b": 2}
    header = {"c": 3}
    encode("t", header, [np.zeros(2)])
    assert header == {"c": 3}  # the caller's dict is not modified


def test_version_is_checked_before_the_frame_layout():
    newer = [PROTOCOL + struct.pack(">H", VERSION + 1), b"t"]  # a layout this version never sent
    with pytest.raises(ProtocolError, match=f"version {VERSION + 1}") as info:
        decode(newer)
    assert info.value.code == "version"
