"""kpt.wire's exceptions: one root, one class per failure a caller handles differently."""

from __future__ import annotations

from typing import Any


class WireError(Exception):
    """Root of every kpt.wire error."""


class TransportError(WireError):
    """The message did not make it: server unreachable, dead (no heartbeat) or closed."""


class CallTimeout(TransportError, TimeoutError):
    """No reply within the call's timeout while the server still looked alive."""


class ProtocolError(WireError):
    """A message broke the wire format or its limits; nothing was allocated for it.

    ``code`` is a short machine-readable reason; ``request_id`` is the request id when it could
    still be read (so a server can answer), else None.
    """

    def __init__(self, message: str, code: str = "protocol", request_id: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class RemoteError(WireError):
    """The server answered with an error: ``code`` (machine-readable), ``message``, ``details``."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = dict(details or {})


class HandlerError(WireError):
    """Raised by a server handler to answer the caller with RemoteError(code, message, details)."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = details
