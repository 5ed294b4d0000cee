"""SimClient: the Python face of a simulator daemon (docs/sim-daemon-protocol.md).

Launches, copies and events are one-way casts: a program can queue thousands of ops without a
round trip. They are batched here (up to BATCH_OPS per message) and sent before any call, on
flush() and on close(). Their errors wait in the daemon and are raised, typed, by this client's
next synchronize() or blocking call (read, event_time).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from kpt.sim import _daemon_liveness as liveness
from kpt.sim._client_holds import Holds
from kpt.sim._client_rendezvous import Outcomes, RendezvousCalls, _ref_to_wire
from kpt.sim._daemon_access import TOKEN_ENV, TOKEN_FIELD
from kpt.sim._errors import ERRORS, DeviceHangError, DeviceLostError, OutOfMemoryError, SimError
from kpt.sim._memory import ALIGNMENT
from kpt.sim._op_cost import cost_to_wire
from kpt.wire import CallTimeout, Client, RemoteError, TransportError, WireError

#: Protocol of the daemon's message catalogue (not the wire's envelope version).
SIM_PROTOCOL = "kpt-sim/1"
ENDPOINT_ENV = "KPT_SIM_ENDPOINT"
BATCH_OPS = 256  # asynchronous work queued client-side before it is sent as one message
# Back-pressure, like a GPU's bounded launch queue: after every FENCE_OPS casts an asynchronous
# "now" call is sent as a fence; its reply means the daemon has run everything before it. Once
# more than MAX_FENCES_AHEAD fences are unanswered, queuing waits for the oldest, so a program
# never runs minutes ahead of the daemon (a later synchronize would then look like a hang).
FENCE_OPS = 1024
MAX_FENCES_AHEAD = 2
EXIT_GRACE_S = 0.5  # how long a broken connection waits to see the local daemon's pid go
CHUNK_BYTES = 256 << 20  # larger writes and reads travel in pieces, under the wire's size limit
# Reads up to this size ask for their bytes inside the reply's header ("inline"): an array frame
# costs its descriptor on both sides (~30 us of a ~100 us round trip), a msgpack bin next to
# nothing. A daemon that predates "inline" ignores the flag and sends a frame, still understood.
INLINE_READ_BYTES = 1 << 16
CONNECT_TIMEOUT_S = 2.0  # a daemon that does not answer "hello" within this is not there
# alloc_async draws on memory leased from the daemon in slices of this size (see
# _daemon_leases): an out-of-memory error is then raised by the allocation that needed it.
LEASE_BYTES = 64 << 20


class TensorRef(NamedTuple):
    """A tensor in daemon memory: buffer id, byte offset, dtype name, shape, strides in elements."""

    buffer: int
    offset: int
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @classmethod
    def contiguous(
        cls, buffer: int, dtype: str, shape: Sequence[int], offset: int = 0
    ) -> TensorRef:
        """A row-major tensor that starts `offset` bytes into `buffer`."""
        strides, step = [], 1
        for size in reversed(shape):
            strides.append(step)
            step *= max(int(size), 1)
        return cls(buffer, offset, dtype, tuple(int(s) for s in shape), tuple(reversed(strides)))


def _as_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def typed_error(error: RemoteError) -> SimError:
    """The kpt.sim error a daemon's RemoteError stands for (codes are the error class names)."""
    details = dict(getattr(error, "details", None) or {})
    cls = ERRORS.get(error.code)
    if cls is OutOfMemoryError:
        sizes = {k: details.get(k) for k in ("device", "requested", "free", "total")}
        typed: SimError = OutOfMemoryError(error.message, **sizes)
    elif cls is not None:
        typed = cls(error.message)
    else:
        typed = SimError(f"simulator daemon error {error.code!r}: {error.message}")
    typed.details = details  # type: ignore[attr-defined]
    return typed


class SimClient(RendezvousCalls):
    """A connection to a simulator daemon. Thread-safe; a dead daemon raises DeviceLostError."""

    def __init__(
        self,
        endpoint: str | None = None,
        timeout: float = 300.0,
        heartbeat_interval: float | None = None,
        admin_token: str | None = None,
        curve_server_key: str | bytes | None = None,
        curve_public_key: str | bytes | None = None,
        curve_secret_key: str | bytes | None = None,
    ) -> None:
        """timeout bounds each call, like NCCL's watchdog: a call unanswered that long raises
        DeviceHangError naming the operation (a synchronize may wait for much queued numerics).

        heartbeat_interval: None picks, for a daemon on this host (whose pid is then watched, so
        its death is noticed within ~0.2 s), one long enough that silence never outlasts a
        call's timeout (the connection, and with it this client's memory, then survives a busy
        or stopped daemon); 1 s for a remote one.
        admin_token: the daemon owner's token (start_daemon().admin_token, or the file
        `kpt-sim serve --admin-token-file` wrote; default: $KPT_SIM_ADMIN_TOKEN), needed for
        reset, inject_fault and the traces of every client's work.
        curve_*: CURVE keys for a daemon on another host (tcp:// with `kpt-sim serve --curve-*`).
        """
        endpoint = endpoint or os.environ.get(ENDPOINT_ENV)
        if not endpoint:
            raise ValueError(
                f"no simulator endpoint: pass SimClient(endpoint) or set {ENDPOINT_ENV}, "
                "or start one with kpt.sim.start_daemon()"
            )
        self.endpoint = endpoint
        self._admin_token = admin_token or os.environ.get(TOKEN_ENV) or None
        local = liveness.is_local_endpoint(endpoint)
        if heartbeat_interval is None:
            heartbeat_interval = (
                max(liveness.LOCAL_HEARTBEAT_S, timeout / 3 + 1)
                if local
                else liveness.REMOTE_HEARTBEAT_S
            )
        self.heartbeat_interval = heartbeat_interval
        _check_reachable(endpoint)
        self._wire = Client(
            endpoint, timeout=timeout, heartbeat_interval=heartbeat_interval,
            curve_server_key=curve_server_key, curve_public_key=curve_public_key,
            curve_secret_key=curve_secret_key,
        )  # fmt: skip
        self._watcher: liveness.PidWatcher | None = None
        self._event_ids = itertools.count(1)
        self._alias_ids = itertools.count(1)
        self._event_lock = threading.Lock()
        self._batch: list[list] = []
        self._unfenced = 0  # casts sent since the last fence
        self._fences: collections.deque = collections.deque()  # futures of unanswered fences
        # Keeps queued casts in program order. Re-entrant: a tensor finalizer run by the GC in
        # the middle of a call on this thread may free() (queue) without deadlocking.
        self._batch_lock = threading.RLock()
        self.holds = Holds()  # buffers a posted collective will still write
        self._outcomes = Outcomes()  # collectives' outcomes fetched ahead of their polls
        self._lease_lock = threading.Lock()
        self._leased: dict[int, int] = {}  # device -> bytes of the lease not yet allocated
        hello = self._hello()
        if hello.get("protocol") != SIM_PROTOCOL:
            self.close()
            raise SimError(
                f"daemon at {endpoint} speaks {hello.get('protocol')!r}, this client "
                f"{SIM_PROTOCOL!r}: install matching kpt-sim versions on both sides"
            )
        self.numerics: bool = bool(hello.get("numerics", True))
        self.admin: bool = bool(hello.get("admin", False))
        self.executor: str = str(hello.get("executor", ""))
        pid = liveness.same_host_pid(hello)
        if pid is not None:
            every = float(hello.get("heartbeat", liveness.REMOTE_HEARTBEAT_S)) / 2
            self._watcher = liveness.PidWatcher(pid, self._wire.close, self._ping, every)

    def _hello(self) -> dict:
        """The first exchange, bounded by CONNECT_TIMEOUT_S: a wrong endpoint fails fast."""
        header = {"protocol": SIM_PROTOCOL}
        if self._admin_token:
            header[TOKEN_FIELD] = self._admin_token
        try:
            return self._wire.call("hello", header, timeout=CONNECT_TIMEOUT_S).header
        except (CallTimeout, TransportError, WireError) as exc:
            self._wire.close()
            raise DeviceLostError(
                f"no simulator daemon answers at {self.endpoint} within {CONNECT_TIMEOUT_S:g} s "
                f"({type(exc).__name__}): check {ENDPOINT_ENV} (it must be the endpoint "
                "`kpt-sim serve` printed), start a daemon there, or unset it to use an "
                "embedded one"
            ) from None
        except RemoteError as exc:
            self._wire.close()
            raise typed_error(exc) from None

    def _admin(self, kind: str, header: dict):
        """A call only the daemon's owner may make: it carries the owner's token."""
        if self._admin_token:
            header = {**header, TOKEN_FIELD: self._admin_token}
        return self._call(kind, header)

    # -- transport -----------------------------------------------------------------------------
    def _call(self, kind: str, header: dict, arrays: Sequence = (), idempotent: bool = False):
        if self._batch:
            # Queued casts ride along as the call's "prelude" (one message, run first). The lock
            # is held until the call is answered so no other thread's casts can overtake them.
            with self._batch_lock:
                if self._batch:
                    ops, self._batch = self._batch, []
                    return self._send(kind, {**header, "prelude": ops}, arrays, False)
        return self._send(kind, header, arrays, idempotent)

    def _send(self, kind: str, header: dict, arrays: Sequence, idempotent: bool):
        try:
            return self._wire.call(kind, header, arrays=list(arrays), idempotent=idempotent)
        except RemoteError as exc:
            raise typed_error(exc) from None
        except CallTimeout as exc:
            if self._watcher is not None and self._watcher.dead:
                raise self._lost(exc) from exc
            raise self._hang(kind) from exc
        except (TransportError, WireError) as exc:
            raise self._lost(exc) from exc

    def _queue(self, kind: str, header: dict) -> None:
        """Queue one asynchronous op (sent at BATCH_OPS, before a call, or on flush)."""
        with self._batch_lock:
            self._batch.append([kind, header])
            if len(self._batch) >= BATCH_OPS:
                self._send_batch()

    def flush(self) -> None:
        """Send queued asynchronous work now (calls do this themselves)."""
        if self._batch:
            with self._batch_lock:
                self._send_batch()

    def _send_batch(self) -> None:
        ops, self._batch = self._batch, []
        if not ops:
            return
        try:
            self._wire.cast("batch", {"ops": ops})
            self._unfenced += len(ops)
            if self._unfenced >= FENCE_OPS:
                self._unfenced = 0
                self._fences.append(self._wire.call_async("now", {}))
        except (TransportError, WireError) as exc:
            raise self._lost(exc) from exc
        while len(self._fences) > MAX_FENCES_AHEAD:
            self._await_fence(self._fences.popleft())

    def _await_fence(self, fence: concurrent.futures.Future) -> None:
        try:
            fence.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise DeviceHangError(
                f"simulator daemon at {self.endpoint} did not work through its queue within "
                f"{self.timeout:g} s; pass SimClient(timeout=...) for longer waits"
            ) from None
        except RemoteError:
            pass  # the fence's own answer does not matter, only that it came
        except (TransportError, WireError) as exc:
            raise self._lost(exc) from exc

    @property
    def timeout(self) -> float:
        """Seconds each call may wait for its answer (a synchronize waits for queued work)."""
        return self._wire.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {seconds!r}")
        self._wire.timeout = float(seconds)

    def _ping(self) -> None:
        # A call, not a cast: its answer is traffic the wire client hears, so an idle client
        # never mistakes the daemon's silence for death and drops the connection (and with it
        # every buffer it holds).
        self._wire.call_async("ping", {})

    def _daemon_exited(self) -> bool:
        """Whether the watched local daemon is gone. A unix:// stream breaks while the process
        is still exiting, before the watcher's next poll: give the exit a moment to finish."""
        watcher = self._watcher
        if watcher is None:
            return False
        deadline = time.monotonic() + EXIT_GRACE_S
        while not watcher.dead and liveness.pid_alive(watcher.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _hang(self, kind: str) -> DeviceHangError:
        """Name the operation, and tell a stopped daemon from a busy or hung one."""
        waited = f"{kind!r} got no answer from the simulator daemon at {self.endpoint} within "
        waited += f"{self.timeout:g} s"
        pid = None if self._watcher is None else self._watcher.pid
        state = liveness.process_state(pid) if pid is not None else None
        if state == "T":
            return DeviceHangError(
                f"{waited}: its process (pid {pid}) is stopped (SIGSTOP or a debugger); this "
                f"client's memory is kept: resume it (kill -CONT {pid}) and call again"
            )
        where = f" (pid {pid} is running)" if pid is not None else ""
        return DeviceHangError(
            f"{waited}{where}: busy with a long queue of numerics (its own or other clients') "
            "or stuck; this client's memory is kept; pass SimClient(timeout=...) to wait longer"
        )

    def _lost(self, exc: Exception) -> DeviceLostError:
        if self._daemon_exited():
            return DeviceLostError(
                f"simulator daemon at {self.endpoint} (pid {self._watcher.pid}) exited: its "
                "devices and buffers are gone; start a new one"
            )
        return DeviceLostError(
            f"simulator daemon at {self.endpoint} is unreachable ({type(exc).__name__}: {exc}); "
            "it exited or was killed: its devices and buffers are gone"
        )

    # -- devices and memory --------------------------------------------------------------------
    def devices(self) -> list[dict]:
        """Every simulated device: index, profile, vendor, model, memory_total, peak rates..."""
        return list(self._call("devices", {}, idempotent=True).header["devices"])

    def alloc(self, device: int, nbytes: int) -> int:
        """A new buffer of `nbytes` on `device`; its id. OutOfMemoryError names the sizes."""
        return int(self._call("alloc", {"device": device, "nbytes": nbytes}).header["buffer"])

    def alloc_async(self, device: int, nbytes: int) -> int:
        """Like alloc, usually without a round trip: returns a (negative) id at once.

        The memory comes out of a lease this client holds on the device, renewed with one
        round trip when it runs short, so OutOfMemoryError is raised here, by the allocation
        that needed the memory, even when other processes share the daemon."""
        size = -(-max(int(nbytes), 1) // ALIGNMENT) * ALIGNMENT  # what the device gives
        with self._lease_lock:
            if self._leased.get(device, 0) < size:
                self._leased.pop(device, None)
                header = {"device": device, "need": size, "want": max(size, LEASE_BYTES)}
                self._leased[device] = int(self._call("lease", header).header["granted"])
            self._leased[device] -= size
            with self._event_lock:
                alias = -next(self._alias_ids)
            self._queue("alloc_async", {"device": device, "nbytes": nbytes, "alias": alias})
        return alias

    def free(self, buffer: int) -> None:
        """Release a buffer; queued like a launch (a bad id is raised by the next synchronize).

        Work queued before it that uses the buffer still runs; memory_stats and alloc see the
        memory back (calls send queued work first)."""
        self.holds.touching([buffer])
        self._queue("free", {"buffer": buffer})

    def memory_stats(self, device: int) -> dict:
        """allocated, peak, total and free bytes of `device`, over every client."""
        return dict(self._call("memory_stats", {"device": device}, idempotent=True).header)

    def reset_peak_memory_stats(self, device: int) -> None:
        self._call("reset_peak", {"device": device})

    # -- data ----------------------------------------------------------------------------------
    def write(self, buffer: int, offset: int, data: Any, stream: int = 0) -> None:
        """Host -> device copy of raw bytes (modelled on the host link); returns once stored."""
        payload = _as_bytes(data)
        self.holds.touching([buffer])
        for start in range(0, max(payload.size, 1), CHUNK_BYTES):
            piece = payload[start : start + CHUNK_BYTES]
            header = {"buffer": buffer, "offset": offset + start, "stream": stream}
            self._call("write", header, [piece])

    def write_async(self, buffer: int, offset: int, data: Any, stream: int = 0) -> None:
        """Like write, without waiting: the bytes are copied now and sent in order with the
        queued launches; a bad buffer or offset is raised by the next synchronize/read."""
        payload = _as_bytes(data)
        self.holds.touching([buffer])
        with self._batch_lock:
            self._send_batch()  # what was queued before it runs before it
            for start in range(0, max(payload.size, 1), CHUNK_BYTES):
                piece = payload[start : start + CHUNK_BYTES].copy()  # caller may reuse its data
                header = {"buffer": buffer, "offset": offset + start, "stream": stream}
                try:
                    self._wire.cast("write_async", header, [piece])
                except (TransportError, WireError) as exc:
                    raise self._lost(exc) from exc

    def read(self, buffer: int, offset: int, nbytes: int, stream: int = 0) -> np.ndarray:
        """Device -> host bytes (uint8). Waits for prior work; raises pending async errors."""
        if nbytes > CHUNK_BYTES:
            out = np.empty(nbytes, np.uint8)
            for start in range(0, nbytes, CHUNK_BYTES):
                size = min(CHUNK_BYTES, nbytes - start)
                out[start : start + size] = self.read(buffer, offset + start, size, stream)
            return out
        self.holds.all()
        header = {"buffer": buffer, "offset": offset, "nbytes": nbytes, "stream": stream}
        if nbytes <= INLINE_READ_BYTES:
            header["inline"] = True
        message = self._call("read", header)
        zeros = message.header.get("zeros")
        if type(zeros) is int:  # a timing-only daemon: no values, made here, not sent
            return np.zeros(zeros, np.uint8)
        data = message.header.get("data")
        if type(data) is bytes:
            return np.frombuffer(data, np.uint8)  # read-only, like a received frame's view
        return message.arrays[0] if message.arrays else np.empty(0, np.uint8)

    def launch(
        self,
        device: int,
        op: str,
        inputs: Iterable[Any],
        outputs: Iterable[Any],
        attrs: dict | None = None,
        stream: int = 0,
        cost: Any = None,
        host_ops: int = 0,
    ) -> None:
        """Queue `op` (a name the daemon's executor knows) on a stream; returns immediately.

        inputs/outputs: TensorRefs, or refs already in wire form ([buffer, offset, dtype, shape,
        strides] lists); cost: an OpCost, its wire list, or None for the executor to estimate.
        host_ops: ops the caller dispatched since its last launch that launched nothing (views,
        allocations), for the profile's host time per such op.
        """
        header = {
            "device": device,
            "op": op,
            "inputs": [_ref_to_wire(r) for r in inputs],
            "outputs": [_ref_to_wire(r) for r in outputs],
            "attrs": attrs or {},
            "stream": stream,
            "cost": cost_to_wire(cost),
        }
        if host_ops:
            header["host_ops"] = host_ops
        if self.holds:  # the hot path: no list built when nothing is held
            self.holds.touching([ref[0] for ref in header["inputs"] + header["outputs"]])
        with self._batch_lock:
            self._batch.append(["launch", header])
            if len(self._batch) >= BATCH_OPS:
                self._send_batch()

    def graph_replay(self, device: int, on: bool) -> None:
        """Between on=True and on=False, this client's launches on `device` are one replayed
        graph (a CUDA graph): the first pays the host one launch, the others nothing, and they
        run back to back. Values are computed as ever; only their host time changes."""
        self._queue("graph_replay", {"device": device, "on": bool(on)})

    def graph(self, action: str, graph: int, device: int | None = None) -> None:
        """A captured graph (as a CUDA graph): "begin" captures this client's launches on
        `device` into graph `graph` (an id of the caller's) until "end"; "launch" replays them
        with one message; "free" forgets it. Errors are raised by the next blocking call."""
        self._queue(f"graph_{action}", {"graph": graph, "device": device})

    def host_work(self, device: int, seconds: float) -> None:
        """The host spent `seconds` on its own work (Python the simulator cannot see) before
        what it issues next to `device`; work already queued there goes on meanwhile."""
        self._queue("host_work", {"device": device, "seconds": float(seconds)})

    def copy(self, src: Any, dst: Any, stream: int = 0) -> None:
        """Device -> device copy (across links when the devices differ); returns immediately."""
        src, dst = _ref_to_wire(src), _ref_to_wire(dst)
        self.holds.touching([src[0], dst[0]])
        self._queue("copy", {"src": src, "dst": dst, "stream": stream})

    def collective(
        self,
        kind: str,
        inputs: Sequence[Any],
        outputs: Sequence[Any] = (),
        op: str = "sum",
        root: int | None = None,
        algorithm: str | None = None,
        stream: int = 0,
        factors: Sequence[float] | None = None,
    ) -> None:
        """all_reduce, all_gather, reduce_scatter, broadcast, all_to_all or send_recv over the
        devices holding `inputs` (one contiguous tensor per rank); returns immediately.

        all_reduce/broadcast work in place when `outputs` is empty; `root` is a device index.
        op premul_sum scales input r by factors[r] before the sum, inside the collective.
        """
        header = {
            "kind": kind,
            "inputs": [_ref_to_wire(r) for r in inputs],
            "outputs": [_ref_to_wire(r) for r in outputs],
            "op": op,
            "root": root,
            "algorithm": algorithm,
            "stream": stream,
            "factors": None if factors is None else [float(f) for f in factors],
        }
        self.holds.touching([ref[0] for ref in header["inputs"] + header["outputs"]])
        self._queue("collective", header)

    # -- streams, events, time -----------------------------------------------------------------
    def record_event(self, device: int, stream: int = 0) -> int:
        """Mark the point in `stream` that everything queued so far reaches; returns its id."""
        with self._event_lock:
            event = next(self._event_ids)
        self._queue("record_event", {"event": event, "device": device, "stream": stream})
        return event

    def wait_event(self, event: int, device: int, stream: int = 0) -> None:
        """Later work on (device, stream) starts only after `event` completes."""
        self._queue("wait_event", {"event": event, "device": device, "stream": stream})

    def wait_stream(self, device: int, stream: int, on: int) -> None:
        """Later work on (device, stream) starts only after the work queued on (device, on) so
        far: record_event on `on` and wait_event onto `stream` in one queued op."""
        self._queue("wait_stream", {"device": device, "stream": stream, "on": on})

    def event_time(self, event: int) -> float:
        """Simulated seconds at which `event` completed (waits for it)."""
        self.holds.all()
        return float(self._call("event_time", {"event": event}).header["time"])

    def synchronize(self, device: int | None = None) -> float:
        """Wait for queued work (one device or all); raise the first pending error; sim time."""
        self.holds.all()
        return float(self._call("synchronize", {"device": device}).header["now"])

    def now(self) -> float:
        """The daemon's simulated clock, in seconds (shared by every client)."""
        return float(self._call("now", {}, idempotent=True).header["now"])

    # -- control -------------------------------------------------------------------------------
    def inject_fault(self, kind: str, **spec: Any) -> None:
        """Schedule or trigger a fault (see the engine's fault file format), e.g. device_lost."""
        self._admin("inject_fault", {"kind": kind, **spec})

    def reset(self) -> None:
        """Free every buffer of every client, clear faults, restart the clock at 0."""
        self._admin("reset", {})
        with self._lease_lock:
            self._leased.clear()

    def record_ops(self, on: bool = True) -> None:
        """Start recording (afresh) every client's timed ops as an op trace, or stop."""
        self._admin("record_ops", {"on": on})

    def dump_ops(self, path: str | os.PathLike) -> str:
        """Write the recorded op trace (JSON that kpt.sim.replay and `kpt-sim replay` read)."""
        message = self._admin("dump_ops", {})
        with open(path, "wb") as f:
            f.write(memoryview(message.arrays[0]))
        return os.fspath(path)

    def dump_trace(self, path: str | os.PathLike) -> str:
        """Write the daemon's Chrome trace (Perfetto opens it) to a local file; returns the path."""
        message = self._admin("dump_trace", {})
        data = message.arrays[0] if message.arrays else np.empty(0, np.uint8)
        with open(path, "wb") as f:
            f.write(memoryview(data))
        return os.fspath(path)

    def close(self) -> None:
        """Tell the daemon to free this client's buffers now (it would after heartbeats stop)."""
        try:
            self.flush()
            self._wire.call("bye", {}, timeout=1.0)
        except (WireError, SimError):
            pass  # daemon gone or slow: it frees our memory when our heartbeats stop
        if self._watcher is not None:
            self._watcher.stop()
        self._wire.close()

    def __enter__(self) -> SimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_reachable(endpoint: str) -> None:
    """Fail at once, saying what to do, for a unix:// endpoint with no socket behind it."""
    if not endpoint.startswith("unix://"):
        return
    path = endpoint[len("unix://") :]
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        reason = "does not exist"
    except PermissionError:
        reason = "is not accessible to this user (the daemon's folder is private to its owner)"
    except OSError as exc:
        reason = f"cannot be checked ({exc.strerror})"
    else:
        if is_socket:
            return
        reason = "is not a socket"
    raise DeviceLostError(
        f"no simulator daemon at {endpoint}: {path} {reason}; check {ENDPOINT_ENV} (it must be "
        "the endpoint `kpt-sim serve` printed), start a daemon there, or unset it to use an "
        "embedded one"
    )
