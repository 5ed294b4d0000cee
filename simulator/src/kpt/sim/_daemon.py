"""The simulator daemon: serves the engine's devices over kpt.wire to any number of clients.

Every handler runs on the wire server's single thread, so this state needs no locks. Values are
computed eagerly, in the order messages arrive (program order for each client); the engine
decides WHEN each op would have run on the chip. Message catalogue: docs/sim-daemon-protocol.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpt.sim import _daemon_collectives as collectives
from kpt.sim._client import SIM_PROTOCOL
from kpt.sim._daemon_buffers import (
    Buffer,
    BufferTable,
    bad,
    buffer_field,
    contiguous,
    field_int,
    parse_cost,
)
from kpt.sim._daemon_recorder import OpRecorder
from kpt.sim._daemon_rendezvous import Rendezvous
from kpt.sim._errors import DeviceHangError, OutOfMemoryError, SimError
from kpt.sim._executors import Executor, View
from kpt.sim._simulator import Simulator
from kpt.sim._version import __version__
from kpt.wire import HandlerError, Message

log = logging.getLogger("kpt.sim.daemon")

MAX_STREAMS = 1024  # per client and device: stream ids are small integers
MAX_BUFFERS_PER_CLIENT = 1 << 20
MAX_EVENTS_PER_CLIENT = 1 << 16  # the oldest are forgotten first
CAST_TYPES = ("launch", "copy", "record_event", "wait_event", "collective", "alloc_async")
MAX_BATCH = 4096  # casts in one "batch" message
MAX_INLINE_READ = 1 << 16  # a read asking for "inline" bytes gets them in the header up to this


@dataclass
class ClientState:
    buffers: set[int]
    events: OrderedDict[int, tuple[int, int]]  # client's event id -> (engine event, device)
    pending: list[SimError]  # errors of casts, raised by the next blocking call
    dropped: int = 0  # pending errors beyond the first few, counted only


class SimDaemon:
    """Owns buffers' values, clients and their pending errors; the engine owns time and memory."""

    def __init__(
        self,
        sim: Simulator,
        executor: Executor,
        numerics: bool = True,
        executor_name: str = "",
        heartbeat_interval: float = 1.0,
    ) -> None:
        self.sim = sim
        self.heartbeat_interval = heartbeat_interval  # the wire server's, told to clients
        self.executor = executor
        self.executor_name = executor_name or type(executor).__name__
        self.numerics = numerics
        self.device_count = len(sim.devices)
        self.buffers = BufferTable()  # same ids as the engine's buffers
        self.clients: dict[bytes, ClientState] = {}
        self.streams: dict[tuple[bytes, int], int] = {}  # (client, its stream) -> engine stream
        self._next_stream = 0
        self._spare_streams: list[int] = []  # engine streams of clients that left
        self.recorder: OpRecorder | None = None  # on: every timed op goes into an op trace
        # Collectives whose ranks are separate clients (the ranks of kpt.collectives)
        values = executor if numerics else None
        self.rendezvous = Rendezvous(sim, self.buffers, values, self._stream)
        self._handlers = {
            "hello": self.hello,
            "devices": self.devices,
            "alloc": self.alloc,
            "free": self.free,
            "write": self.write,
            "read": self.read,
            "launch": self.launch,
            "copy": self.copy,
            "record_event": self.record_event,
            "wait_event": self.wait_event,
            "event_time": self.event_time,
            "synchronize": self.synchronize,
            "now": self.now,
            "memory_stats": self.memory_stats,
            "reset_peak": self.reset_peak,
            "inject_fault": self.inject_fault,
            "reset": self.reset,
            "dump_trace": self.dump_trace,
            "collective": self.collective,
            "collective_post": self.rendezvous.post,
            "collective_poll": self.rendezvous.poll,
            "alloc_async": self.alloc_async,
            "bye": self.bye,
            "record_ops": self.record_ops,
            "dump_ops": self.dump_ops,
        }
        self._cast_handlers = {name: self._handlers[name] for name in CAST_TYPES}
        self._cast_handlers.update(free=self.free_async)  # in a batch, free is a cast too

    # -- wiring --------------------------------------------------------------------------------
    def register(self, server: Any) -> None:
        for name, handler in self._handlers.items():
            wrapped = self._cast(handler) if name in CAST_TYPES else self._call(handler)
            server.register(name, wrapped)
        server.register("batch", self.batch)
        server.register("write_async", self._write_async)
        server.register("ping", lambda msg, client_id: {})  # liveness only: any traffic counts

    def _call(self, handler):
        def serve(msg: Message, client_id: bytes):
            state = self._client(client_id)
            prelude = msg.header.get("prelude")
            if prelude is not None:  # casts the client queued before this call: run them first
                self._run_batch(prelude, state, client_id)
            try:
                return handler(msg, state, client_id)
            except SimError as exc:
                raise _handler_error(exc) from None

        return serve

    def _cast(self, handler):
        def serve(msg: Message, client_id: bytes) -> None:
            self._run_cast(msg.type, handler, msg.header, self._client(client_id), client_id)

        return serve

    def _run_cast(self, kind: str, handler, header: dict, state: ClientState, client_id: bytes):
        try:
            handler(header, state, client_id)
        except SimError as exc:
            self._defer(state, exc)
        except Exception as exc:  # a bug must not kill the daemon; the client still hears
            self._defer(state, SimError(f"internal error in {kind}: {exc!r}"))

    def batch(self, msg: Message, client_id: bytes) -> None:
        """Many casts in one message (the client batches them): one wake-up, one decode."""
        self._run_batch(msg.header.get("ops"), self._client(client_id), client_id)

    def _run_batch(self, ops: Any, state: ClientState, client_id: bytes) -> None:
        if type(ops) is not list or len(ops) > MAX_BATCH:
            self._defer(state, bad(f"batch: 'ops' must be a list of at most {MAX_BATCH} casts"))
            return
        handlers = self._cast_handlers
        for entry in ops:
            if type(entry) is not list or len(entry) != 2 or type(entry[1]) is not dict:
                self._defer(state, bad(f"batch entry {entry!r:.80} must be [type, header]"))
                continue
            handler = handlers.get(entry[0])
            if handler is None:
                self._defer(state, bad(f"batch entry type {entry[0]!r:.40} is not a cast: "
                                        f"use one of {', '.join(handlers)}"))  # fmt: skip
                continue
            self._run_cast(entry[0], handler, entry[1], state, client_id)

    def _client(self, client_id: bytes) -> ClientState:
        state = self.clients.get(client_id)
        if state is None:
            state = self.clients[client_id] = ClientState(set(), OrderedDict(), [])
            log.info("client %s connected (%d clients)", client_id.hex(), len(self.clients))
        return state

    def _defer(self, state: ClientState, error: SimError) -> None:
        if len(state.pending) < 8:
            state.pending.append(error)
        else:
            state.dropped += 1

    def _raise_pending(self, state: ClientState) -> None:
        if not state.pending:
            return
        first, more = state.pending[0], len(state.pending) - 1 + state.dropped
        state.pending.clear()
        state.dropped = 0
        if more:
            first.args = (f"{first.args[0] if first.args else first} (and {more} later error(s))",)
        raise first

    def client_gone(self, client_id: bytes) -> None:
        """The wire lost a client (closed or stopped heartbeating): free all it held."""
        self.rendezvous.client_gone(client_id)  # its collectives fail for the other ranks
        state = self.clients.pop(client_id, None)
        if state is None:
            return
        freed = 0
        for buffer_id in list(state.buffers):
            buffer = self.buffers.remove(buffer_id)
            freed += buffer.nbytes
            self._release(buffer)
        log.info(
            "client %s gone: freed %d buffers (%d bytes); %d clients left",
            client_id.hex(), len(state.buffers), freed, len(self.clients),
        )  # fmt: skip
        for key in [k for k in self.streams if k[0] == client_id]:
            self._spare_streams.append(self.streams.pop(key))  # engine streams are reused

    def _stream(self, client_id: bytes, header: dict) -> int:
        """The engine stream behind a client's stream number (streams are private per client)."""
        key = (client_id, field_int(header, "stream", high=MAX_STREAMS, default=0))
        found = self.streams.get(key)
        if found is None:
            if self._spare_streams:
                found = self._spare_streams.pop()
            else:
                found = self._next_stream
                self._next_stream += 1
            self.streams[key] = found
        return found

    # -- handlers: (msg, state, client_id) -> reply --------------------------------------------
    def hello(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        return {
            "protocol": SIM_PROTOCOL,
            "version": __version__,
            "numerics": self.numerics,
            "executor": self.executor_name,
            "device_count": self.device_count,
            "heartbeat": self.heartbeat_interval,
            "pid": os.getpid(),  # a client on this host watches it instead of short heartbeats
            "host": socket.gethostname(),
        }

    def bye(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.client_gone(client_id)
        return {}

    def devices(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        return {"devices": self.sim.device_info()}

    def alloc(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        return {"buffer": self._allocate(msg.header, state, client_id)}

    def alloc_async(self, header: dict, state: ClientState, client_id: bytes) -> None:
        alias = header.get("alias")
        if type(alias) is not int or alias >= 0:
            raise bad(f"alloc_async: field 'alias' = {alias!r:.40} must be a negative integer")
        self._allocate(header, state, client_id, alias)

    def _allocate(self, header: dict, state: ClientState, client_id: bytes, alias=None) -> int:
        device = self._device(header)
        nbytes = field_int(header, "nbytes")
        if len(state.buffers) >= MAX_BUFFERS_PER_CLIENT:
            raise bad(f"client holds {len(state.buffers)} buffers, the limit; free some first")
        buffer_id = self.sim.alloc(device, nbytes)
        try:
            storage = self.executor.allocate(nbytes) if self.numerics else None
        except MemoryError:
            self.sim.free(buffer_id)
            stats = self.sim.memory_stats(device)
            raise OutOfMemoryError(
                f"device {device}: the daemon's host cannot back {nbytes} bytes with values "
                f"(device free {stats['free']} of {stats['total']}); use --numerics off",
                device=device, requested=nbytes, free=stats["free"], total=stats["total"],
            ) from None  # fmt: skip
        try:
            self.buffers.add(Buffer(buffer_id, device, nbytes, client_id, storage, alias))
        except SimError:
            self.sim.free(buffer_id)
            raise
        state.buffers.add(buffer_id)
        if self.recorder is not None:
            self.recorder.alloc(device, nbytes, buffer_id)
        return buffer_id

    def free(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.free_async(msg.header, state, client_id)
        return {}

    def free_async(self, header: dict, state: ClientState, client_id: bytes) -> None:
        buffer = self.buffers.owned(buffer_field(header), client_id)
        self.buffers.remove(buffer.id)
        state.buffers.discard(buffer.id)
        self._release(buffer)
        if self.recorder is not None:
            self.recorder.free(buffer.id)

    def write(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        buffer = self.buffers.owned(buffer_field(msg.header), client_id)
        offset = field_int(msg.header, "offset", default=0)
        if len(msg.arrays) != 1:
            raise bad(f"write carries {len(msg.arrays)} array frames; send exactly 1 (the bytes)")
        data = memoryview(np.ascontiguousarray(msg.arrays[0]).view(np.uint8).reshape(-1))
        stream = self._stream(client_id, msg.header)
        self.sim.write(buffer.id, offset, data.nbytes, stream)
        self._record("h2d", device=buffer.device, bytes=data.nbytes, stream=stream)
        if self.numerics:
            self.executor.write(buffer.storage, offset, data)
        return {}

    def _write_async(self, msg: Message, client_id: bytes) -> None:
        """A write sent as a cast (no reply): its error waits for the next blocking call."""
        state = self._client(client_id)
        try:
            self.write(msg, state, client_id)
        except SimError as exc:
            self._defer(state, exc)
        except Exception as exc:  # a bug must not kill the daemon; the client still hears
            self._defer(state, SimError(f"internal error in write_async: {exc!r}"))

    def read(self, msg: Message, state: ClientState, client_id: bytes):
        buffer = self.buffers.owned(buffer_field(msg.header), client_id)
        offset = field_int(msg.header, "offset", default=0)
        nbytes = field_int(msg.header, "nbytes")
        stream = self._stream(client_id, msg.header)
        self._record("d2h", device=buffer.device, bytes=nbytes, stream=stream)  # + its sync
        self.sim.read(buffer.id, offset, nbytes, stream)
        self._raise_pending(state)
        if self.numerics:
            data = self.executor.read(buffer.storage, offset, nbytes)
        else:
            data = np.zeros(nbytes, np.uint8)  # timing-only: there are no values to read
        if msg.header.get("inline") is True and nbytes <= MAX_INLINE_READ:
            return {"data": data.tobytes()}  # in the header: no array frame to describe
        return {}, [data]

    def launch(self, header: dict, state: ClientState, client_id: bytes) -> None:
        device = self._device(header)
        stream = self._stream(client_id, header)
        op = header.get("op")
        if not isinstance(op, str) or not op:
            raise bad(f"field 'op' = {op!r} must be an op name (a non-empty string)")
        attrs = header.get("attrs") or {}
        if not isinstance(attrs, dict):
            raise bad(f"op {op!r}: field 'attrs' = {attrs!r:.80} must be a map")
        inputs = self.buffers.refs(header.get("inputs", []), "inputs", device, client_id)
        outputs = self.buffers.refs(header.get("outputs", []), "outputs", device, client_id)
        in_views, out_views = [v for v, _ in inputs], [v for v, _ in outputs]
        try:
            cost = self._cost(header.get("cost"), op, in_views, out_views, attrs)
            touched = [b.id for _, b in (*inputs, *outputs)]
            self.sim.launch(device, cost, stream, touched, op)
            if self.recorder is not None:
                self.recorder.launch(device, cost, stream, op)
            if self.numerics:
                self.executor.run(op, in_views, out_views, attrs)
        except (ValueError, KeyError, TypeError, IndexError, ArithmeticError) as exc:
            if isinstance(exc, SimError):
                raise
            detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise bad(f"op {op!r} on device {device}: {detail}") from None

    def copy(self, header: dict, state: ClientState, client_id: bytes) -> None:
        stream = self._stream(client_id, header)
        src, src_buffer = self.buffers.refs([header.get("src")], "src", None, client_id)[0]
        dst, dst_buffer = self.buffers.refs([header.get("dst")], "dst", None, client_id)[0]
        if src.dtype != dst.dtype or src.shape != dst.shape:
            raise bad(
                f"copy from {src.dtype}{list(src.shape)} to {dst.dtype}{list(dst.shape)}: "
                "dtype and shape must match"
            )
        self.sim.transfer(
            src_buffer.device, dst_buffer.device, src.nbytes, stream, (src_buffer.id, dst_buffer.id)
        )
        self._record(
            "copy", src=src_buffer.device, dst=dst_buffer.device, bytes=src.nbytes, stream=stream
        )
        if not self.numerics:
            return
        if contiguous(src) and contiguous(dst):  # any executor can move plain bytes
            data = self.executor.read(src.storage, src.offset, src.nbytes)
            self.executor.write(dst.storage, dst.offset, memoryview(data).cast("B"))
        else:
            self.executor.run("copy", [src], [dst], {})

    def collective(self, header: dict, state: ClientState, client_id: bytes) -> None:
        kind = header.get("kind")
        if type(kind) is not str:
            raise bad(f"collective: field 'kind' = {kind!r:.40} must be a collective's name")
        stream = self._stream(client_id, header)
        inputs = self.buffers.refs(header.get("inputs", []), "inputs", None, client_id)
        outputs = self.buffers.refs(header.get("outputs") or [], "outputs", None, client_id)
        in_views, out_views = [v for v, _ in inputs], [v for v, _ in outputs]
        devices = [b.device for _, b in inputs]
        if kind != "send_recv" and any(b.device != d for (_, b), d in zip(outputs, devices)):
            raise bad(f"collective {kind}: output r must live on the device of input r")
        root = header.get("root")
        if root is not None and root not in devices:
            raise bad(f"collective {kind}: root {root!r:.20} is not among the devices {devices}")
        op, algorithm = header.get("op", "sum"), header.get("algorithm")
        if type(op) is not str or (algorithm is not None and type(algorithm) is not str):
            raise bad(f"collective {kind}: 'op' and 'algorithm' must be names")
        collectives.check_shapes(kind, in_views, out_views, root)
        nbytes = collectives.timed_bytes(kind, in_views, out_views)
        if kind == "send_recv":
            src, dst = devices[0], outputs[0][1].device
            options = {"src": src, "dst": dst}
        else:
            options = {"root": root}
        self.sim.collective(
            kind, nbytes, None if kind == "send_recv" else devices,
            algorithm=algorithm, stream=stream, **options,
        )  # fmt: skip
        if self.recorder is not None:
            self.recorder.collective(kind, nbytes, stream, devices, algorithm, options)
        if self.numerics:
            rank = devices.index(root) if root is not None else 0
            collectives.compute(self.executor, kind, in_views, out_views, op, rank)

    def record_event(self, header: dict, state: ClientState, client_id: bytes) -> None:
        event = field_int(header, "event", low=1)
        device = self._device(header)
        stream = self._stream(client_id, header)
        token = self.sim.record_event(device, stream)
        self._record("record", device=device, event=token, stream=stream)
        state.events[event] = (token, device)
        state.events.move_to_end(event)
        while len(state.events) > MAX_EVENTS_PER_CLIENT:
            state.events.popitem(last=False)

    def wait_event(self, header: dict, state: ClientState, client_id: bytes) -> None:
        token, _ = self._event(state, header)
        device = self._device(header)
        stream = self._stream(client_id, header)
        self.sim.wait_event(token, device, stream)
        self._record("wait", device=device, event=token, stream=stream)

    def event_time(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        token, device = self._event(state, msg.header)
        time = self.sim.event_time(token)
        if not math.isfinite(time):
            self.sim.synchronize(device)  # raises the hang (or the error that caused it)
            raise DeviceHangError(f"event on device {device} never completes: the device hung")
        self._raise_pending(state)
        return {"time": time}

    def synchronize(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        device = None if msg.header.get("device") is None else self._device(msg.header)
        self._record("sync", **({} if device is None else {"device": device}))
        now = self.sim.synchronize(device)
        self._raise_pending(state)
        return {"now": now}

    def record_ops(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        """Start (afresh) or stop recording the timed ops of every client as an op trace."""
        self.recorder = OpRecorder() if msg.header.get("on", True) is True else None
        return {}

    def dump_ops(self, msg: Message, state: ClientState, client_id: bytes):
        if self.recorder is None:
            raise bad("not recording: call record_ops first")
        data = json.dumps(self.recorder.document(self.sim)).encode()
        return {"nbytes": len(data), "ops": len(self.recorder.ops)}, [np.frombuffer(data, np.uint8)]

    def _record(self, kind: str, **fields: Any) -> None:
        if self.recorder is not None:
            self.recorder.add({"op": kind, **fields})

    def now(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        return {"now": self.sim.now()}

    def memory_stats(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        return dict(self.sim.memory_stats(self._device(msg.header)))

    def reset_peak(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.sim.devices[self._device(msg.header)].memory.reset_peak()
        return {}

    def inject_fault(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.sim.inject_fault(dict(msg.header))
        return {}

    def reset(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.buffers.clear()
        self.clients.clear()
        self.streams.clear()
        self._next_stream = 0
        self._spare_streams.clear()
        self.sim.reset()
        return {}

    def dump_trace(self, msg: Message, state: ClientState, client_id: bytes):
        with tempfile.TemporaryDirectory(prefix="kpt-sim-trace-") as folder:
            path = Path(folder) / "trace.json"
            self.sim.dump_trace(path)
            data = path.read_bytes()
        return {"nbytes": len(data)}, [np.frombuffer(data, np.uint8)]

    # -- validation ----------------------------------------------------------------------------
    def _device(self, header: dict) -> int:
        return field_int(header, "device", high=self.device_count)

    def _cost(self, raw: Any, op: str, inputs: list[View], outputs: list[View], attrs: dict):
        if raw is None:
            return self.executor.estimate(op, inputs, outputs, attrs)
        return parse_cost(raw, op)

    def _event(self, state: ClientState, header: dict) -> tuple[int, int]:
        event = field_int(header, "event", low=1)
        token = state.events.get(event)
        if token is None:
            raise bad(f"event {event} was never recorded by this client (or is long forgotten)")
        return token

    def _release(self, buffer: Buffer) -> None:
        self.sim.free(buffer.id)
        buffer.storage = None


def _handler_error(exc: SimError) -> HandlerError:
    details: dict[str, Any] = {}
    if isinstance(exc, OutOfMemoryError):
        details = {"device": exc.device, "requested": exc.requested, "free": exc.free,
                   "total": exc.total}  # fmt: skip
    return HandlerError(type(exc).__name__, str(exc), **details)
