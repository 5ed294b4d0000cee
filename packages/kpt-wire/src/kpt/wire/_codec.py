"""The envelope: frames <-> Message. Every bound is checked before anything is allocated.

Frames: [b"KPTW" + version (2 bytes, big-endian), type (utf-8), msgpack header (a map with string
keys; the request id is its "_rid" field), one raw frame per array]. See docs/protocol.md.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from kpt.wire._dtypes import describe, resolve
from kpt.wire._errors import ProtocolError
from kpt.wire._limits import Limits

PROTOCOL = b"KPTW"
VERSION = 2  # 2: the request id moved from its own frame into the header ("_rid")
_PREAMBLE = PROTOCOL + struct.pack(">H", VERSION)
MAX_REQUEST_ID = (1 << 64) - 1
MAX_TYPE_BYTES = 64
ARRAYS_KEY = "_arrays"  # protocol-owned header key: one descriptor per array frame
RID_KEY = "_rid"  # protocol-owned header key: the request id; absent means 0 (a cast)
_RID_PREFIX = 32  # bytes that hold a map header, "_rid" and a uint64 (5 + 5 + 9) with room
ERROR_TYPE = "_error"
HEARTBEAT_TYPE = "_heartbeat"
# Message types: lowercase words joined by . _ - : ; a leading "_" is reserved for the protocol.
_TYPE_RE = re.compile(r"_?[a-z0-9][a-z0-9._:-]*")
COPY_THRESHOLD = 1 << 16  # frames above this size are sent without copying

Frame = bytes | memoryview


@dataclass(slots=True)
class Message:
    """A decoded message: its type, header (string keys) and arrays (read-only views of frames)."""

    type: str
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)
    request_id: int = 0


def _to_msgpack(value: Any) -> Any:
    # Numpy scalars are common in headers built from arrays; send them as plain numbers.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(
        f"header value {value!r} of type {type(value).__name__} cannot be sent; "
        "use str, bytes, int, float, bool, None, list or dict"
    )


_packer_default = _to_msgpack


def _array_frame(array: Any) -> tuple[dict[str, Any], memoryview]:
    if not isinstance(array, np.ndarray):
        if isinstance(array, bytes | bytearray | memoryview):
            array = np.frombuffer(array, dtype=np.uint8)
        else:
            raise TypeError(
                f"array of type {type(array).__name__} cannot be sent; pass a numpy.ndarray "
                "(torch tensors: tensor.numpy()) or a bytes-like object"
            )
    name, order = describe(array.dtype)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # the only copy on the send path
    # View as bytes: the buffer protocol cannot export ml_dtypes element types directly.
    raw = array.reshape(-1).view(np.uint8).data if array.size else memoryview(b"")
    return {"dtype": name, "shape": list(array.shape), "order": order}, raw


_CHECKED_TYPES: dict[str, bytes] = {}  # names already validated, so the regex runs once each


def check_type(type: str) -> bytes:
    """The encoded type name; ValueError for a name the protocol does not allow."""
    known = _CHECKED_TYPES.get(type) if isinstance(type, str) else None
    if known is not None:
        return known
    if not isinstance(type, str) or not _TYPE_RE.fullmatch(type):
        raise ValueError(
            f"message type {type!r} is invalid; use lowercase letters, digits and . _ - : "
            "(a leading '_' is reserved for the protocol)"
        )
    encoded = type.encode()
    if len(encoded) > MAX_TYPE_BYTES:
        raise ValueError(f"message type {type!r} is over {MAX_TYPE_BYTES} bytes; shorten it")
    if len(_CHECKED_TYPES) < 4096:
        _CHECKED_TYPES[type] = encoded
    return encoded


def encode(
    type: str,
    header: Mapping[str, Any] | None = None,
    arrays: Iterable[Any] = (),
    request_id: int = 0,
) -> list[Frame]:
    """Frames for one message. Array frames are views of the arrays' memory (no copy)."""
    type_frame = _CHECKED_TYPES.get(type) if type.__class__ is str else None
    if type_frame is None:
        type_frame = check_type(type)
    fields = header if header is not None else {}
    for key in fields:
        if key.__class__ is not str or key[:1] == "_":
            _refuse_key(key)
    if request_id:
        if request_id.__class__ is not int or not 0 < request_id <= MAX_REQUEST_ID:
            raise ValueError(f"request_id must be an int in [0, 2**64), got {request_id!r}")
        # First in the map, so a receiver can answer even a header it refuses to decode; and a
        # copy: the caller's dict stays as it was.
        fields = {RID_KEY: request_id, **fields}
    elif request_id != 0 or request_id.__class__ is not int:
        raise ValueError(f"request_id must be an int in [0, 2**64), got {request_id!r}")
    if (arrays.__class__ is tuple or arrays.__class__ is list) and not arrays:
        # The common case: nothing to describe, no list to build.
        return [_PREAMBLE, type_frame, _packer().pack(fields)]
    frames: list[Frame] = [_PREAMBLE, type_frame, b""]
    descriptors = []
    for array in arrays:
        descriptor, raw = _array_frame(array)
        descriptors.append(descriptor)
        frames.append(raw)
    if descriptors:
        fields = {**fields, ARRAYS_KEY: descriptors}
    frames[2] = _packer().pack(fields)
    return frames


def _refuse_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"header key {key!r} must be a str")
    if key.startswith("_"):
        raise ValueError(f"header key {key!r}: keys starting with '_' are reserved")


_local = threading.local()


def _packer() -> msgpack.Packer:
    # One reusable Packer per thread: building one per message costs as much as packing.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, default=_packer_default)
    return packer


def _buffer(frame: Any) -> memoryview:
    buffer = getattr(frame, "buffer", None)  # zmq.Frame
    return buffer if buffer is not None else memoryview(frame).cast("B")


def _size(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


def _small_bytes(frame: Any) -> bytes:
    """Envelope frames are small: copying them is cheaper than wrapping them in views."""
    if isinstance(frame, bytes):
        return frame
    raw = getattr(frame, "bytes", None)  # zmq.Frame
    return raw if raw is not None else bytes(frame)


def read_request_id(frames: Sequence[Any]) -> int | None:
    """The request id of a possibly malformed message, or None if it cannot be read.

    For answering a refused message: senders put ``_rid`` first in the header map, so only the
    header's first few bytes are read, whatever its size or the rest of its content.
    """
    if len(frames) < 3:
        return None
    if _size(frames[0]) != len(_PREAMBLE) or _small_bytes(frames[0])[:4] != PROTOCOL:
        return None
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_RID_PREFIX, strict_map_key=True)
    unpacker.feed(_buffer(frames[2])[:_RID_PREFIX])
    try:
        if unpacker.read_map_header() < 1 or unpacker.unpack() != RID_KEY:
            return None
        return _valid_request_id(unpacker.unpack())
    except Exception:  # short, truncated or not msgpack: no id to read
        return None


def _valid_request_id(value: Any) -> int | None:
    if value.__class__ is int and 0 <= value <= MAX_REQUEST_ID:
        return value
    return None


def _check_preamble(frame: Any, frames: Sequence[Any]) -> None:
    size = _size(frame)
    first = _small_bytes(frame) if size == len(_PREAMBLE) else b""
    if first == _PREAMBLE:
        return
    if first[:4] != PROTOCOL:
        shown = _small_bytes(frame)[:16] if size else b""
        raise ProtocolError(
            f"not a kpt.wire message: first frame is {shown!r} ({size} bytes), "
            f"expected {_PREAMBLE!r} ({PROTOCOL.decode()} version {VERSION})",
        )
    version = struct.unpack(">H", first[4:6])[0]
    raise ProtocolError(
        f"protocol version mismatch: message speaks {PROTOCOL.decode()} version {version}, "
        f"this side speaks version {VERSION}; install matching kpt-wire versions on both sides",
        code="version",
        # Best effort: a peer of another version may still put its request id where we do.
        request_id=read_request_id(frames),
    )


def _unpack_header(raw: bytes, frames: Sequence[Any]) -> dict[str, Any]:
    bound = len(raw)  # nothing in a header can be longer than the header itself
    try:
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=bound,
            max_bin_len=bound,
            max_array_len=bound,
            max_map_len=bound,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several types; all mean "bad header"
        raise ProtocolError(
            f"header is not valid msgpack: {type(exc).__name__}: {exc}",
            request_id=read_request_id(frames),
        ) from None
    if header.__class__ is not dict:
        raise ProtocolError(
            f"header must be a msgpack map, got {type(header).__name__}", request_id=None
        )
    for key in header:
        if key.__class__ is not str:  # strict_map_key lets bytes through; the spec says str
            raise ProtocolError(
                f"header key {key!r} is {type(key).__name__}; header keys must be msgpack "
                "str (text), not bin: pack them as str",
                request_id=read_request_id(frames),
            )
    return header


def _shape(descriptor: Any, limits: Limits, index: int, rid: int | None) -> tuple[int, ...]:
    shape = descriptor.get("shape") if isinstance(descriptor, dict) else None
    if not isinstance(shape, list) or len(shape) > limits.max_array_dims:
        raise ProtocolError(
            f"array {index}: shape {shape!r} must be a list of at most "
            f"{limits.max_array_dims} dimensions",
            request_id=rid,
        )
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(
            f"array {index}: shape {shape!r} must hold non-negative ints", request_id=rid
        )
    return tuple(shape)


def _arrays(
    header: dict[str, Any], frames: Sequence[Any], limits: Limits, rid: int | None
) -> list[np.ndarray]:
    descriptors = header.pop(ARRAYS_KEY, [])
    if not frames and not descriptors:
        return []
    if not isinstance(descriptors, list) or len(descriptors) != len(frames):
        count = len(descriptors) if isinstance(descriptors, list) else descriptors
        raise ProtocolError(
            f"header describes {count!r} arrays but {len(frames)} array frames came",
            request_id=rid,
        )
    arrays = []
    for index, (descriptor, frame) in enumerate(zip(descriptors, frames)):
        shape = _shape(descriptor, limits, index, rid)
        dtype = resolve(descriptor.get("dtype"), descriptor.get("order", "|"))
        if dtype is None:
            raise ProtocolError(
                f"array {index}: dtype {descriptor.get('dtype')!r} with byte order "
                f"{descriptor.get('order')!r} is not allowed on the wire",
                request_id=rid,
            )
        raw = _buffer(frame)
        # Python ints: a huge declared shape is a big number here, never an allocation.
        expected = dtype.itemsize
        for dim in shape:
            expected *= dim
        if expected != raw.nbytes:
            raise ProtocolError(
                f"array {index}: shape {list(shape)} of {dtype.name} needs {expected} bytes "
                f"but its frame holds {raw.nbytes}",
                request_id=rid,
            )
        try:
            array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        except ValueError as exc:  # e.g. a zero-size array with a dimension numpy cannot index
            raise ProtocolError(
                f"array {index}: shape {list(shape)} of {dtype.name} is no shape numpy can hold "
                f"({exc}); the product of its non-zero dimensions times the item size must stay "
                "below 2**63",
                request_id=rid,
            ) from None
        array.flags.writeable = False  # a view of a received frame: never scribble on it
        arrays.append(array)
    return arrays


def decode(frames: Sequence[Any], limits: Limits = Limits()) -> Message:  # noqa: B008
    """Message from frames (bytes, memoryviews or zmq.Frame); ProtocolError on any bad input."""
    count = len(frames)
    if count > limits.max_frames:
        raise ProtocolError(
            f"message has {count} frames, over the limit of {limits.max_frames}",
            code="limit",
            request_id=read_request_id(frames),
        )
    total = 0
    for frame in frames:
        total += frame.nbytes if frame.__class__ is memoryview else len(frame)
    if total > limits.max_message_bytes:
        raise ProtocolError(
            f"message is {total} bytes, over the limit of {limits.max_message_bytes}",
            code="limit",
            request_id=read_request_id(frames),
        )
    # The version comes first: another version may lay out the other frames differently.
    first = frames[0] if count else b""
    if first.__class__ is not bytes or first != _PREAMBLE:
        _check_preamble(first, frames)
    if count < 3:
        raise ProtocolError(
            f"message has {count} frames; a kpt.wire message has at least 3 "
            "(protocol, type, header)"
        )
    raw_header = frames[2]
    if raw_header.__class__ is not bytes:
        raw_header = _small_bytes(raw_header)
    header_size = len(raw_header)
    if header_size > limits.max_header_bytes:
        raise ProtocolError(
            f"header is {header_size} bytes, over the limit of {limits.max_header_bytes}",
            code="limit",
            request_id=read_request_id(frames),
        )
    header = _unpack_header(raw_header, frames)
    rid = header.pop(RID_KEY, 0)
    if rid.__class__ is not int or not 0 <= rid <= MAX_REQUEST_ID:
        raise ProtocolError(f"header field {RID_KEY!r} must be an int in [0, 2**64), got {rid!r}")
    raw_type = frames[1]
    type = _KNOWN_TYPES.get(raw_type) if raw_type.__class__ is bytes else None
    if type is None:
        type = _message_type(raw_type, rid)
    if count == 3 and ARRAYS_KEY not in header:
        return Message(type, header, [], rid)
    arrays = _arrays(header, [_buffer(frame) for frame in frames[3:]], limits, rid)
    return Message(type, header, arrays, rid)


_KNOWN_TYPES: dict[bytes, str] = {}  # validated type names, so the regex runs once per name


def _message_type(frame: Any, rid: int | None) -> str:
    raw = _small_bytes(frame) if _size(frame) <= MAX_TYPE_BYTES else b""
    known = _KNOWN_TYPES.get(raw)
    if known is not None:
        return known
    try:
        name = raw.decode()
        check_type(name)
    except (UnicodeDecodeError, ValueError):
        shown = _small_bytes(frame)[: MAX_TYPE_BYTES + 1]
        raise ProtocolError(f"message type {shown!r} is invalid", request_id=rid) from None
    if len(_KNOWN_TYPES) < 4096:  # bounded: a flood of new names cannot grow it forever
        _KNOWN_TYPES[raw] = name
    return name
