"""AsyncClient: the Client's methods as coroutines, for asyncio code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from kpt.wire._client import _BACKOFF_CAP, _BACKOFF_START, Client
from kpt.wire._codec import Message
from kpt.wire._errors import TransportError


class AsyncClient:
    """Same arguments as Client; ``await aclient.call(...)``. Never blocks the event loop."""

    def __init__(self, endpoint: str, **options: Any):
        self._client = Client(endpoint, **options)
        self.endpoint = endpoint

    @property
    def client_id(self) -> bytes:
        return self._client.client_id

    async def call(
        self,
        type: str,
        header: Mapping[str, Any] | None = None,
        arrays: Iterable[Any] = (),
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> Message:
        """Like Client.call: retries only ``idempotent`` calls after transport failures."""
        arrays = list(arrays)
        attempts = 1 + (self._client.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return await self.call_async(type, header, arrays, timeout)
            except TransportError:
                if attempt + 1 == attempts:
                    raise
            await asyncio.sleep(min(_BACKOFF_CAP, _BACKOFF_START * 2**attempt))
        raise AssertionError("unreachable")

    def call_async(
        self,
        type: str,
        header: Mapping[str, Any] | None = None,
        arrays: Iterable[Any] = (),
        timeout: float | None = None,
    ) -> asyncio.Future:
        """An asyncio future of the reply (one attempt, no retry)."""
        return asyncio.wrap_future(self._client.call_async(type, header, arrays, timeout))

    async def cast(
        self, type: str, header: Mapping[str, Any] | None = None, arrays: Iterable[Any] = ()
    ) -> None:
        """One-way message; returns at once."""
        self._client.cast(type, header, arrays)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
