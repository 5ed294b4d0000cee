"""The simulator daemon: serves the engine's devices over kpt.wire to any number of clients.

Every handler runs on the wire server's single thread, so this state needs no locks. Values are
computed eagerly, in the order messages arrive (program order for each client); the engine
decides WHEN each op would have run on the chip. Message catalogue: docs/sim-daemon-protocol.md.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpt.sim import _daemon_collectives as collectives
from kpt.sim._client import SIM_PROTOCOL
from kpt.sim._daemon_access import ADMIN_TYPES, TOKEN_FIELD, AccessPolicy, new_token
from kpt.sim._daemon_buffers import (
    Buffer,
    BufferTable,
    bad,
    buffer_field,
    contiguous,
    field_int,
    parse_cost,
)
from kpt.sim._daemon_events import EventCalls
from kpt.sim._daemon_graphs import GraphCalls
from kpt.sim._daemon_health import device_health
from kpt.sim._daemon_host import HostMemory
from kpt.sim._daemon_issue import IssueCalls
from kpt.sim._daemon_leases import Leases
from kpt.sim._daemon_recorder import OpRecorder
from kpt.sim._daemon_rendezvous import Rendezvous
from kpt.sim._errors import LinkDownError, OutOfMemoryError, SimError
from kpt.sim._executors import Executor, View
from kpt.sim._host_model import MAX_HOST_OPS
from kpt.sim._simulator import Simulator
from kpt.sim._version import __version__
from kpt.wire import HandlerError, Message

log = logging.getLogger("kpt.sim.daemon")

MAX_STREAMS = 1024  # per client and device: stream ids are small integers
MAX_BUFFERS_PER_CLIENT = 1 << 20
CAST_TYPES = ("launch", "copy", "record_event", "wait_event", "wait_stream", "collective",
              "alloc_async", "graph_replay", "host_work", "collective_cast", "graph_begin",
              "graph_end", "graph_launch", "graph_free")  # fmt: skip
MAX_BATCH = 4096  # casts in one "batch" message
MAX_INLINE_READ = 1 << 16  # a read asking for "inline" bytes gets them in the header up to this
MAX_READ = 1 << 30  # bytes one read may return: larger reads go in chunks (bounds a reply's copy)
MAX_LEASE = 1 << 62  # bytes one lease request may name (any more is a malformed request)
NOT_FAULT_FIELDS = (TOKEN_FIELD, "prelude")


@dataclass
class ClientState:
    buffers: set[int]
    events: OrderedDict[int, tuple[int, int]]  # client's event id -> (engine event, device)
    pending: list[SimError]  # errors of casts, raised by the next blocking call
    dropped: int = 0  # pending errors beyond the first few, counted only
    # device -> the replay's next launch: GRAPH_HEAD (pays the one host launch) or GRAPH_NODE
    graph: dict[int, str] = field(default_factory=dict)
    capturing: dict[int, tuple] = field(default_factory=dict)  # device -> (graph id, Graph)
    graphs: dict[int, Any] = field(default_factory=dict)  # captured graphs by the client's id


class SimDaemon(EventCalls, IssueCalls, GraphCalls):
    """Owns buffers' values, clients and their pending errors; the engine owns time and memory."""

    def __init__(
        self,
        sim: Simulator,
        executor: Executor,
        numerics: bool = True,
        executor_name: str = "",
        heartbeat_interval: float = 1.0,
        access: AccessPolicy | None = None,
        host_memory: HostMemory | None = None,
    ) -> None:
        self.sim = sim
        # Without a policy, the daemon's owner is whoever holds `admin_token`, made here.
        self.admin_token = new_token() if access is None else None
        self.access = access or AccessPolicy(self.admin_token)
        self.host = host_memory or HostMemory()
        self.leases = Leases(sim)
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
            "graph_replay": self.graph_replay,
            "host_work": self.host_work,
            "graph_begin": self.graph_begin,
            "graph_end": self.graph_end,
            "graph_launch": self.graph_launch,
            "graph_free": self.graph_free,
            "copy": self.copy,
            "record_event": self.record_event,
            "wait_event": self.wait_event,
            "wait_stream": self.wait_stream,
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
            "collective_cast": self.rendezvous.post_cast,
            "collective_poll": self.rendezvous.poll,
            "collective_timing": self.rendezvous.timing,
            "alloc_async": self.alloc_async,
            "lease": self.lease,
            "bye": self.bye,
            "record_ops": self.record_ops,
            "dump_ops": self.dump_ops,
        }
        self._cast_handlers = {name: self._handlers[name] for name in CAST_TYPES}
        self._cast_handlers.update(free=self.free_async)  # in a batch, free is a cast too

    # -- wiring --------------------------------------------------------------------------------
    def register(self, server: Any) -> None:
        for name, handler in self._handlers.items():
            if name in CAST_TYPES:
                wrapped = self._cast(handler)
            else:
                wrapped = self._call(handler, admin_only=name in ADMIN_TYPES)
            server.register(name, wrapped)
        server.register("batch", self.batch)
        server.register("write_async", self._write_async)
        server.register("ping", lambda msg, client_id: {})  # liveness only: any traffic counts

    def _call(self, handler, admin_only: bool = False):
        def serve(msg: Message, client_id: bytes):
            state = self._client(client_id)
            prelude = msg.header.get("prelude")
            if prelude is not None:  # casts the client queued before this call: run them first
                self._run_batch(prelude, state, client_id)
            try:
                if admin_only:
                    self.access.check(msg.type, msg.header)
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
        self.leases.release(client_id)
        log.info(
            "client %s gone: freed %d buffers (%d bytes); %d clients left",
            client_id.hex(), len(state.buffers), freed, len(self.clients),
        )  # fmt: skip
        for key in [k for k in self.streams if k[0] == client_id]:
            self._spare_streams.append(self.streams.pop(key))  # engine streams are reused

    def _stream(
        self, client_id: bytes, header: dict, name: str = "stream", default: Any = 0
    ) -> int:
        """The engine stream behind the client's stream number header[name] (streams are
        private per client); `default` where the field is absent (... : required)."""
        key = (client_id, field_int(header, name, high=MAX_STREAMS, default=default))
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
            "admin": self.access.is_admin(msg.header),  # may it reset, inject faults, see all
        }

    def bye(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.client_gone(client_id)
        return {}

    def devices(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        infos = self.sim.device_info()
        for info in infos:  # what a health check (kpt devices, hal.select) must not miss
            info["health"] = device_health(self.sim, info["index"])
        return {"devices": infos}

    def alloc(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        return {"buffer": self._allocate(msg.header, state, client_id)}

    def alloc_async(self, header: dict, state: ClientState, client_id: bytes) -> None:
        alias = header.get("alias")
        if type(alias) is not int or alias >= 0:
            raise bad(f"alloc_async: field 'alias' = {alias!r:.40} must be a negative integer")
        self._allocate(header, state, client_id, alias)

    def lease(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        """Set device memory aside for this client's alloc_async calls (see _daemon_leases)."""
        device = self._device(msg.header)
        need = field_int(msg.header, "need", high=MAX_LEASE)
        want = field_int(msg.header, "want", high=MAX_LEASE, default=need)
        return {"granted": self.leases.grant(client_id, device, want, need)}

    def _allocate(self, header: dict, state: ClientState, client_id: bytes, alias=None) -> int:
        device = self._device(header)
        nbytes = field_int(header, "nbytes")
        if len(state.buffers) >= MAX_BUFFERS_PER_CLIENT:
            raise bad(f"client holds {len(state.buffers)} buffers, the limit; free some first")
        if alias is not None:
            self.leases.take(client_id, device, nbytes)  # the slice it leased is free for it now
        buffer_id = self.sim.alloc(device, nbytes)
        try:
            storage = self._back(client_id, device, nbytes)
        except BaseException:
            self.sim.free(buffer_id)
            raise
        try:
            self.buffers.add(Buffer(buffer_id, device, nbytes, client_id, storage, alias))
        except BaseException:
            self.sim.free(buffer_id)
            if storage is not None:
                self.host.release(client_id, nbytes)
            raise
        state.buffers.add(buffer_id)
        if self.recorder is not None:
            self.recorder.alloc(device, nbytes, buffer_id)
        return buffer_id

    def _back(self, client_id: bytes, device: int, nbytes: int) -> Any:
        """Host storage for a new buffer's values: zero-filled (never another client's freed
        bytes) and within the daemon's host-memory limits; None in timing-only mode."""
        if not self.numerics:
            return None
        self.host.reserve(client_id, nbytes, device)
        try:
            return self.executor.allocate(nbytes)
        except Exception as exc:  # numpy raises MemoryError, torch RuntimeError
            self.host.release(client_id, nbytes)
            raise OutOfMemoryError(
                f"device {device}: the simulator daemon's host could not back {nbytes} bytes "
                f"with values ({type(exc).__name__}: {str(exc)[:200]}); free buffers or use "
                "--numerics off",
                device=device, requested=nbytes, free=0, total=self.host.total,
            ) from None  # fmt: skip

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
        self.refuse_while_capturing(state, (buffer.device,), "write")
        stream = self._stream(client_id, msg.header)
        self._claim(state, buffer.device, self.sim.write, buffer.id, offset, data.nbytes, stream)
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
        if nbytes > MAX_READ:
            raise bad(f"read of {nbytes} bytes: at most {MAX_READ} per read; read in chunks")
        stream = self._stream(client_id, msg.header)
        self.refuse_while_capturing(state, (buffer.device,), "read")
        self.rendezvous.refuse_host_wait([buffer.device], "read")
        self._record("d2h", device=buffer.device, bytes=nbytes, stream=stream)  # + its sync
        self._claim(state, buffer.device, self.sim.read, buffer.id, offset, nbytes, stream)
        self._raise_pending(state)
        if not self.numerics:  # no values: the client makes the zeros, the daemon spends nothing
            return {"zeros": nbytes}
        data = self.executor.read(buffer.storage, offset, nbytes)
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
        host_ops = field_int(header, "host_ops", default=0, high=MAX_HOST_OPS)
        try:
            cost = self._cost(header.get("cost"), op, in_views, out_views, attrs)
            if self.capture(state, device, stream, cost, op, inputs, outputs, attrs):
                return
            touched = [b.id for _, b in (*inputs, *outputs)]
            node = self.launches_as_graph_node(state, device)
            issue = (device, cost, stream, touched, op, None, node, host_ops)  # Simulator.launch
            self._claim(state, device, self.sim.launch, *issue)
            if self.recorder is not None:
                self.recorder.launch(device, cost, stream, op, host_ops)
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
        devices = (src_buffer.device, dst_buffer.device)
        self.refuse_while_capturing(state, devices, "copy")
        failed = self._claim(
            state, devices, self.sim.transfer, *devices, src.nbytes, stream,
            (src_buffer.id, dst_buffer.id),
        )  # fmt: skip
        self._record("copy", src=devices[0], dst=devices[1], bytes=src.nbytes, stream=stream)
        if not self.numerics or failed:  # a copy over a downed link moves no bytes
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
        factors = collectives.scale_factors(op, header.get("factors"), len(devices))
        collectives.check_shapes(kind, in_views, out_views, root)
        nbytes = collectives.timed_bytes(kind, in_views, out_views)
        if kind == "send_recv":
            src, dst = devices[0], outputs[0][1].device
            options = {"src": src, "dst": dst}
        else:
            options = {"root": root}
        involved = tuple(sorted({*devices, *(b.device for _, b in outputs)}))
        self.refuse_while_capturing(state, involved, f"collective {kind}")
        failed = self._claim(
            state, involved, lambda: self.sim.collective(
                kind, nbytes, None if kind == "send_recv" else devices,
                algorithm=algorithm, stream=stream, **options,
            ),
        )  # fmt: skip
        if self.recorder is not None:
            self.recorder.collective(kind, nbytes, stream, devices, algorithm, options)
        if self.numerics and not failed:
            rank = devices.index(root) if root is not None else 0
            collectives.compute(self.executor, kind, in_views, out_views, op, rank, factors)

    def synchronize(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        device = None if msg.header.get("device") is None else self._device(msg.header)
        every = range(len(self.sim.devices)) if device is None else [device]
        self.refuse_while_capturing(state, every, "synchronize")
        self.rendezvous.refuse_host_wait(every, "synchronize")
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
        """The device's memory over every client; leases (set aside, not yet allocated) are
        counted apart, as CUDA counts reserved apart from allocated."""
        device = self._device(msg.header)
        stats = dict(self.sim.memory_stats(device))
        stats["leased"] = self.leases.on_device(device)
        stats["allocated"] -= stats["leased"]
        # Compute-engine seconds and the clock, so clients can report utilization like NVML.
        stats["busy_s"], stats["now_s"] = self.sim.devices[device].busy, self.sim.now()
        return stats

    def reset_peak(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.sim.devices[self._device(msg.header)].memory.reset_peak()
        return {}

    def inject_fault(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        # The header is the fault, less the fields that rode along with it.
        self.sim.inject_fault({k: v for k, v in msg.header.items() if k not in NOT_FAULT_FIELDS})
        return {}

    def reset(self, msg: Message, state: ClientState, client_id: bytes) -> dict:
        self.leases.clear()
        self.host.clear()
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

    def _release(self, buffer: Buffer) -> None:
        self.sim.free(buffer.id)
        if buffer.storage is not None:
            self.host.release(buffer.owner, buffer.nbytes)
        buffer.storage = None

    def _claim(self, state: ClientState, devices: int | tuple[int, ...], engine_call, *args):
        """Run an engine call for one client: the asynchronous errors it leaves on the devices
        are that client's (raised by its next blocking call), never another's. Returns True
        when the call failed a transfer (a link was down), so no bytes should move."""
        try:
            engine_call(*args)
        finally:
            errors = []
            for device in devices if type(devices) is tuple else (devices,):
                errors += self.sim.take_errors(device)
            for error in errors:
                self._defer(state, error)
        return any(isinstance(error, LinkDownError) for error in errors)


def _handler_error(exc: SimError) -> HandlerError:
    details: dict[str, Any] = {}
    if isinstance(exc, OutOfMemoryError):
        details = {"device": exc.device, "requested": exc.requested, "free": exc.free,
                   "total": exc.total}  # fmt: skip
    return HandlerError(type(exc).__name__, str(exc), **details)
