"""kpt.wire: msgpack envelopes with raw array frames over ZeroMQ (heartbeats, limits, CURVE)."""

from kpt.wire._aio import AsyncClient
from kpt.wire._client import Client
from kpt.wire._codec import PROTOCOL, VERSION, Message, decode, encode
from kpt.wire._errors import (
    CallTimeout,
    HandlerError,
    ProtocolError,
    RemoteError,
    TransportError,
    WireError,
)
from kpt.wire._limits import Limits
from kpt.wire._security import generate_keys, is_local
from kpt.wire._server import Server
from kpt.wire._unix import ListenerBounds
from kpt.wire._version import __version__

__all__ = [
    "AsyncClient",
    "CallTimeout",
    "Client",
    "HandlerError",
    "Limits",
    "ListenerBounds",
    "Message",
    "PROTOCOL",
    "ProtocolError",
    "RemoteError",
    "Server",
    "TransportError",
    "VERSION",
    "WireError",
    "__version__",
    "decode",
    "encode",
    "generate_keys",
    "is_local",
]
