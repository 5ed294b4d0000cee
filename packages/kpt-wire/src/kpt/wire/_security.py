"""Who may bind where, CURVE key handling, and the authenticator that refuses unknown clients."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_local(endpoint: str) -> bool:
    """True for ipc://, inproc://, unix:// and tcp:// endpoints on a loopback address."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc", "unix"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    host = host.split(";")[-1]  # "tcp://src;dst:port" connects from src; judge the target
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # an interface name or "*": may face the network


def check_bind(endpoint: str, has_keys: bool) -> str:
    """The endpoint to bind (port 0 made ephemeral), or ValueError saying what to do."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(
            f"endpoint {endpoint!r} is invalid; use 'ipc:///path/x.sock' or 'tcp://127.0.0.1:0'"
        )
    if not is_local(endpoint) and not has_keys:
        raise ValueError(
            f"refusing to bind {endpoint!r} without CURVE keys: only loopback and ipc:// are "
            "open by default. Make keys with `kpt-wire keygen DIR` and pass curve_secret_key= "
            "and curve_public_key= (and authorized_keys=), or bind tcp://127.0.0.1:0"
        )
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        endpoint = endpoint[:-2] + ":*"
    return endpoint


def as_key(key: str | bytes, what: str) -> bytes:
    """A Z85 CURVE key (40 characters) as bytes; ValueError naming the argument otherwise."""
    raw = key.encode() if isinstance(key, str) else key
    if not isinstance(raw, bytes) or len(raw) != 40:
        shown = f"{len(raw)} characters" if isinstance(raw, bytes) else repr(type(key).__name__)
        raise ValueError(
            f"{what} must be a 40-character Z85 CURVE key (from `kpt-wire keygen` or "
            f"kpt.wire.generate_keys()), got {shown}"
        )
    return raw


def generate_keys(
    directory: str | os.PathLike | None = None, name: str = "kpt"
) -> tuple[bytes, bytes]:
    """A new CURVE key pair (public, secret), Z85-encoded.

    With ``directory``, also writes ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600).
    """
    if directory is None:
        return zmq.curve_keypair()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    _, secret_file = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret_file, 0o600)
    public, secret = zmq.auth.load_certificate(secret_file)
    return public, secret


def _authorized(keys: Iterable[str | bytes] | str | os.PathLike) -> set[bytes]:
    if isinstance(keys, str | os.PathLike) and Path(keys).is_dir():
        loaded = zmq.auth.load_certificates(str(keys))  # every NAME.key in the folder
        return set(loaded)
    return {as_key(key, "authorized_keys entry") for key in keys}  # type: ignore[union-attr]


class _KeySet:
    def __init__(self, keys: set[bytes]):
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def secure_server(
    context: zmq.Context,
    socket: zmq.Socket,
    secret: str | bytes,
    public: str | bytes,
    authorized_keys: Iterable[str | bytes] | str | os.PathLike | None,
) -> ThreadAuthenticator:
    """Make ``socket`` a CURVE server; clients not in ``authorized_keys`` are refused."""
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    if authorized_keys is None:
        # Clients still need the server's public key; any client key pair is accepted.
        authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    else:
        provider = _KeySet(_authorized(authorized_keys))
        authenticator.configure_curve_callback(domain="*", credentials_provider=provider)
    socket.curve_secretkey = as_key(secret, "curve_secret_key")
    socket.curve_publickey = as_key(public, "curve_public_key")
    socket.curve_server = True
    return authenticator


def secure_client(
    socket: zmq.Socket,
    server_key: str | bytes,
    public: str | bytes | None,
    secret: str | bytes | None,
) -> None:
    """Make ``socket`` a CURVE client of the server whose public key is ``server_key``."""
    if public is None or secret is None:
        # No key pair of its own: a throwaway one (servers that list authorized_keys refuse it).
        public, secret = zmq.curve_keypair()
    socket.curve_serverkey = as_key(server_key, "curve_server_key")
    socket.curve_publickey = as_key(public, "curve_public_key")
    socket.curve_secretkey = as_key(secret, "curve_secret_key")
