"""The daemon's buffer table and the checks every request field goes through.

Tensor refs arrive as plain msgpack lists; each is checked (owner, dtype, dims, every byte
in bounds) before an executor sees it. Checked refs are cached per client so the per-op
path of a training loop, which names the same tensors over and over, stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kpt.sim._errors import InvalidRequestError
from kpt.sim._executors import DTYPE_SIZES, View
from kpt.sim._op_cost import OpCost

MAX_DIMS = 16
MAX_REFS = 256  # tensors per op: above the 150 refs of CUDA's largest multi-tensor chunk
MAX_TENSOR_REFS = MAX_REFS  # the public name (kpt.sim.MAX_TENSOR_REFS)
REF_CACHE_SIZE = 1 << 16  # checked tensor refs remembered


@dataclass
class Buffer:
    id: int
    device: int
    nbytes: int
    owner: bytes  # the wire client id of whoever allocated it
    storage: Any  # the executor's; None in timing-only mode
    alias: int | None = None  # the negative id its client chose (alloc_async)


def bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def field_int(
    header: dict, name: str, low: int = 0, high: int | None = None, default: Any = ...
) -> int:
    """header[name] as an int in [low, high), or InvalidRequestError naming field and value."""
    value = header.get(name, default)
    if value is ...:
        raise bad(f"request lacks field {name!r} (an integer)")
    if type(value) is not int:
        raise bad(f"field {name!r} = {value!r:.40} must be an integer")
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise bad(f"field {name!r} = {value} must be {bound}")
    return value


def buffer_field(header: dict) -> int:
    """A buffer id: positive (the daemon's) or negative (chosen by its client)."""
    value = header.get("buffer")
    if type(value) is not int or value == 0:
        raise bad(f"field 'buffer' = {value!r:.40} must be a buffer id (a non-zero integer)")
    return value


def int_list(value: Any) -> bool:
    return type(value) in (list, tuple) and all(type(v) is int for v in value)


def contiguous(view: View) -> bool:
    """Row-major and gap-free: its bytes are one run starting at view.offset."""
    expected = 1
    for size, stride in zip(reversed(view.shape), reversed(view.strides)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def parse_cost(raw: Any, op: str) -> OpCost:
    """A wire OpCost [op_class, flops, bytes, dtype?, shape?] (OpCost.from_wire)."""
    return OpCost.from_wire(raw, op)


class BufferTable:
    """Live buffers by id (the engine's ids), their owners, and a cache of checked refs."""

    def __init__(self) -> None:
        self._by_id: dict[int, Buffer] = {}
        self._max_id = 0  # ids below it that are missing were freed
        self._cache: dict[tuple, tuple[View, Buffer]] = {}
        self._cache_keys: dict[int, list[tuple]] = {}  # buffer id -> its cache keys
        self._aliases: dict[tuple[bytes, int], int] = {}  # (client, its negative id) -> id

    def __len__(self) -> int:
        return len(self._by_id)

    def __getitem__(self, buffer_id: int) -> Buffer:
        return self._by_id[buffer_id]

    def values(self):
        return self._by_id.values()

    def live(self, buffer_id: int) -> Buffer | None:
        """The buffer with this (engine) id, or None once freed."""
        return self._by_id.get(buffer_id)

    def add(self, buffer: Buffer) -> None:
        if buffer.alias is not None:
            key = (buffer.owner, buffer.alias)
            if type(buffer.alias) is not int or buffer.alias >= 0 or key in self._aliases:
                raise bad(f"alloc_async id {buffer.alias!r:.40} must be a negative int not in use")
            self._aliases[key] = buffer.id
        self._by_id[buffer.id] = buffer
        self._max_id = max(self._max_id, buffer.id)

    def remove(self, buffer_id: int) -> Buffer:
        for key in self._cache_keys.pop(buffer_id, ()):  # cached views hold the storage too
            self._cache.pop(key, None)
        buffer = self._by_id.pop(buffer_id)
        if buffer.alias is not None:
            self._aliases.pop((buffer.owner, buffer.alias), None)
        return buffer

    def clear(self) -> None:
        """Forget everything (after an engine reset, ids start again at 1)."""
        self._by_id.clear()
        self._cache.clear()
        self._cache_keys.clear()
        self._aliases.clear()

    def owned(self, buffer_id: int, client_id: bytes) -> Buffer:
        """The live buffer `client_id` allocated, or an error saying why not."""
        if type(buffer_id) is int and buffer_id < 0:
            real = self._aliases.get((client_id, buffer_id))
            if real is None:
                raise bad(
                    f"buffer {buffer_id} does not exist: it was freed, or its alloc_async "
                    "failed (that error is raised by the next synchronize)"
                )
            buffer_id = real
        buffer = self._by_id.get(buffer_id)
        if buffer is None:
            if 0 < buffer_id <= self._max_id:
                raise bad(f"buffer {buffer_id} was freed (or its client disconnected)")
            raise bad(f"buffer {buffer_id} does not exist; allocate it with alloc first")
        if buffer.owner != client_id:
            raise bad(
                f"buffer {buffer_id} belongs to another client; a client may only use "
                "buffers it allocated"
            )
        return buffer

    def refs(
        self, refs: Any, what: str, device: int | None, client_id: bytes
    ) -> list[tuple[View, Buffer]]:
        """Checked (View, Buffer) pairs for wire tensor refs, all on `device` (None: any)."""
        if type(refs) not in (list, tuple) or len(refs) > MAX_REFS:
            raise bad(
                f"field {what!r} must be a list of at most {MAX_REFS} tensor refs, got {refs!r:.80}"
            )
        pairs = []
        cache = self._cache
        for i, ref in enumerate(refs):
            key = hit = None
            if type(ref) in (list, tuple) and len(ref) == 5:
                try:
                    key = (client_id, ref[0], ref[1], ref[2], tuple(ref[3]), tuple(ref[4]))
                    hit = cache.get(key)
                except TypeError:  # unhashable parts: the slow path explains what is wrong
                    key = None
            if hit is None or self._by_id.get(hit[1].id) is not hit[1]:
                hit = self._check(ref, i, what, client_id)
                if key is not None:
                    if len(cache) >= REF_CACHE_SIZE:
                        cache.clear()
                        self._cache_keys.clear()
                    cache[key] = hit
                    self._cache_keys.setdefault(hit[1].id, []).append(key)
            buffer = hit[1]
            if device is not None and buffer.device != device:
                raise bad(
                    f"{what}[{i}]: buffer {buffer.id} lives on device {buffer.device}, the op runs "
                    f"on device {device}; copy it across first"
                )
            pairs.append(hit)
        return pairs

    def _check(self, ref: Any, i: int, what: str, client_id: bytes) -> tuple[View, Buffer]:
        if type(ref) not in (list, tuple) or len(ref) != 5:
            raise bad(f"{what}[{i}] = {ref!r:.80} must be [buffer, offset, dtype, shape, strides]")
        buffer_id, offset, dtype, shape, strides = ref
        buffer = self.owned(buffer_field({"buffer": buffer_id}), client_id)
        if type(offset) is not int or offset < 0:
            raise bad(f"{what}[{i}]: byte offset {offset!r:.40} must be an integer >= 0")
        itemsize = DTYPE_SIZES.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise bad(f"{what}[{i}]: dtype {dtype!r:.40} unknown; known: {', '.join(DTYPE_SIZES)}")
        if not (int_list(shape) and int_list(strides)) or not (
            len(shape) == len(strides) <= MAX_DIMS
        ):
            raise bad(
                f"{what}[{i}]: shape {shape!r:.80} and strides {strides!r:.80} must be lists "
                f"of integers of equal length, at most {MAX_DIMS}"
            )
        low = high = 0
        empty = False
        for size, stride in zip(shape, strides):
            if size < 0:
                raise bad(f"{what}[{i}]: shape {list(shape)} holds a negative size")
            if size == 0:
                empty = True
            elif stride < 0:
                low += (size - 1) * stride
            else:
                high += (size - 1) * stride
        first, last = offset + low * itemsize, offset + (high + 1) * itemsize
        if not empty and (first < 0 or last > buffer.nbytes):
            raise bad(
                f"{what}[{i}]: {dtype}{list(shape)} with strides {list(strides)} at offset "
                f"{offset} reaches bytes [{first}, {last}) outside buffer {buffer.id} of "
                f"{buffer.nbytes} bytes"
            )
        return View(buffer.storage, offset, dtype, tuple(shape), tuple(strides)), buffer
