"""Who may do what on a shared daemon.

Every client may use its own buffers, streams and events: that is a CUDA context. Operations
that reach past one client — resetting the daemon (frees everyone's memory), injecting faults,
recording or dumping the timeline of every client's work — belong to the daemon's owner: the
process that holds the token the daemon was started with (``start_daemon()`` hands it to the
caller; ``kpt-sim serve`` writes it to a 0600 file), or anyone when the daemon was started
with ``--allow-admin``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from kpt.sim._errors import AccessDeniedError

# Message types that touch other clients' work or memory.
ADMIN_TYPES = frozenset({"reset", "inject_fault", "record_ops", "dump_ops", "dump_trace"})
TOKEN_FIELD = "token"  # the header field an admin message carries the token in
TOKEN_ENV = "KPT_SIM_ADMIN_TOKEN"  # where SimClient looks when no token is passed


def new_token() -> str:
    return secrets.token_hex(32)


def write_token(path: str | os.PathLike, token: str) -> Path:
    """Write the token to a file only this user can read (created 0600, never widened)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return path


def read_token(path: str | os.PathLike) -> str:
    return Path(path).read_text().strip()


class AccessPolicy:
    """Decides, per message, whether the sender may run it."""

    def __init__(self, token: str | None, allow_admin: bool = False) -> None:
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ValueError("the admin token must be a string of at least 16 characters")
        self._token = token
        self.allow_admin = allow_admin

    def is_admin(self, header: dict) -> bool:
        if self.allow_admin:
            return True
        offered = header.get(TOKEN_FIELD)
        if self._token is None or type(offered) is not str:
            return False
        return hmac.compare_digest(offered.encode(), self._token.encode())

    def check(self, kind: str, header: dict) -> None:
        """Raise AccessDeniedError unless the message may run."""
        if kind in ADMIN_TYPES and not self.is_admin(header):
            raise AccessDeniedError(
                f"{kind!r} affects every client of this daemon, so only its owner may send it: "
                "pass SimClient(admin_token=...) (start_daemon() returns it as "
                f".admin_token; `kpt-sim serve` writes it to --admin-token-file; or set "
                f"{TOKEN_ENV}), or start the daemon with --allow-admin"
            )
