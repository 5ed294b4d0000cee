"""Where a fleet's processes listen, and the one CURVE key pair that lets them leave loopback.

kpt.wire refuses to bind anything but loopback without CURVE keys. A fleet across hosts makes
one key pair when it starts; the router's inbox and every worker's server use it as their
server key and admit only clients that present it, and every client (the router's to each
worker, each worker's to the router) presents it. Holding the secret is membership: a process
without it can neither send a request to a worker nor pose as one to the router.

Workers receive the pair in their environment (never on the command line, where every user of
the host can read it; an environment is readable by the same user and root only).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kpt.wire import generate_keys, is_local

PUBLIC_ENV = "KPT_SERVE_FLEET_PUBLIC_KEY"
SECRET_ENV = "KPT_SERVE_FLEET_SECRET_KEY"


@dataclass(frozen=True)
class FleetKeys:
    public: str  # Z85, 40 characters
    secret: str

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"FleetKeys(public={self.public!r})"

    @classmethod
    def generate(cls) -> FleetKeys:
        public, secret = generate_keys()
        return cls(public.decode(), secret.decode())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FleetKeys | None:
        """The pair a launcher handed this worker, or None (a loopback fleet); ValueError when
        only one half is set."""
        public, secret = environ.get(PUBLIC_ENV), environ.get(SECRET_ENV)
        if public is None and secret is None:
            return None
        if public is None or secret is None:
            raise ValueError(f"set both {PUBLIC_ENV} and {SECRET_ENV}, or neither")
        return cls(public, secret)

    def env(self) -> dict[str, str]:
        return {PUBLIC_ENV: self.public, SECRET_ENV: self.secret}

    def server_options(self) -> dict[str, Any]:
        """kpt.wire.Server arguments: this pair, and only its holders admitted."""
        return {
            "curve_secret_key": self.secret,
            "curve_public_key": self.public,
            "authorized_keys": [self.public],
        }

    def client_options(self) -> dict[str, Any]:
        """kpt.wire.Client arguments: a member of the fleet talking to another."""
        return {
            "curve_server_key": self.public,
            "curve_public_key": self.public,
            "curve_secret_key": self.secret,
        }


@dataclass(frozen=True)
class FleetNetwork:
    """How a fleet's router and workers listen: loopback (the default, no keys), or `bind_host`
    (0.0.0.0 for every interface) with the fleet's key pair, reached at `advertise_host`
    (default: what they bind, or this host's name for a wildcard)."""

    bind_host: str = "127.0.0.1"
    advertise_host: str | None = None
    keys: FleetKeys | None = None

    @classmethod
    def on(cls, bind_host: str, advertise_host: str | None = None) -> FleetNetwork:
        """A key pair is made unless the bind is loopback (kpt.wire binds nothing else
        without one)."""
        keys = None if cls(bind_host).is_loopback else FleetKeys.generate()
        return cls(bind_host, advertise_host, keys)

    @property
    def is_loopback(self) -> bool:
        return is_local(self.endpoint())

    def endpoint(self) -> str:
        """What to bind: an ephemeral TCP port on bind_host."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"tcp://{host}:0"

    def worker_arguments(self) -> list[str]:
        arguments = ["--bind-host", self.bind_host]
        if self.advertise_host is not None:
            arguments += ["--advertise-host", self.advertise_host]
        return arguments

    def worker_env(self) -> dict[str, str]:
        return self.keys.env() if self.keys is not None else {}


def server_options(keys: FleetKeys | None) -> dict[str, Any]:
    return keys.server_options() if keys is not None else {}


def client_options(keys: FleetKeys | None) -> dict[str, Any]:
    return keys.client_options() if keys is not None else {}


def advertised(endpoint: str, host: str | None = None) -> str:
    """The endpoint as other hosts reach it: a wildcard bind (0.0.0.0, ::, *) names `host`, or
    this host's name when `host` is None; any other endpoint is returned as it is."""
    scheme, _, rest = endpoint.partition("://")
    bound, _, port = rest.rpartition(":")
    if scheme != "tcp" or bound.strip("[]") not in ("0.0.0.0", "::", "*"):
        return endpoint
    return f"tcp://{host or socket.getfqdn()}:{port}"
