"""Client processes that share one simulator daemon in the soak (tests/test_daemon_soak.py and
benchmarks/bench_soak.py): one hostile, one computing long batches, one idle holding memory, one
honest client checking every value against numpy.

Run one: ``python soak_clients.py ROLE ENDPOINT SECONDS SEED [MESSAGES]``. A role prints
``ready`` once it has set up and works for SECONDS (the hostile one: for MESSAGES messages, if
given) or until a line comes on stdin (the idle one waits for that line, then checks). It then
prints one JSON line of what it did and saw, and exits 0 when every check held, 1 when one failed
(the line says which). ``Soak`` starts the four in processes, collects their lines, reaps them.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from device_arrays import download, upload

from kpt.sim import AccessDeniedError, SimClient, TensorRef
from kpt.wire import Client, RemoteError, TransportError, WireError

ROLES = ("idle", "honest", "batcher", "hostile")
# Message types of the daemon's catalogue (docs/sim-daemon-protocol.md), and some it lacks.
KINDS = (
    "hello", "devices", "alloc", "free", "write", "read", "launch", "copy", "record_event",
    "wait_event", "event_time", "synchronize", "now", "memory_stats", "reset_peak", "collective",
    "collective_post", "collective_poll", "collective_timing", "alloc_async", "lease", "batch",
    "write_async", "ping",
    "nope", "reset-all", "x" * 40,
)  # fmt: skip
ADMIN = ("reset", "inject_fault", "record_ops", "dump_ops", "dump_trace")
FIELDS = (
    "device", "nbytes", "buffer", "offset", "stream", "op", "inputs", "outputs", "attrs", "cost",
    "src", "dst", "event", "kind", "factor", "ops", "prelude", "alias", "need", "want", "group",
    "seq", "rank", "world", "inline", "token",
)  # fmt: skip
HUGE = (1 << 62, 1 << 40, 2**64 - 1, -(1 << 62), 10**30, float("inf"), float("nan"), -1)


# -- the roles ------------------------------------------------------------------------------------


def idle(endpoint: str, seconds: float, seed: int, messages: int) -> dict:
    """Holds memory and says nothing until told (a line on stdin); then it must all be there."""
    rng = np.random.default_rng(seed)
    client = SimClient(endpoint)
    kept = [(upload(client, d, a), a) for d in (0, 1) for a in [rng.standard_normal(4096)]]
    client.synchronize()
    print("ready", flush=True)
    sys.stdin.readline()
    for ref, array in kept:
        np.testing.assert_array_equal(download(client, ref), array)
    client.close()
    return {"buffers": len(kept), "intact": True}


def honest(endpoint: str, seconds: float, seed: int, messages: int) -> dict:
    """Writes, launches and reads, checking each value against numpy; new memory reads zeros."""
    rng = np.random.default_rng(seed)
    client = SimClient(endpoint, timeout=120)
    anchor = rng.standard_normal(1024).astype(np.float32)  # written once, checked every round
    anchor_ref = upload(client, 0, anchor)
    print("ready", flush=True)
    rounds = calls = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not _told_to_stop():
        device = rounds % 2
        n = int(rng.integers(16, 4096))
        a, b = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
        ra, rb = upload(client, device, a), upload(client, device, b)
        out = TensorRef.contiguous(client.alloc(device, a.nbytes), "float32", (n,))
        assert not download(client, out).any(), "a new buffer showed someone's bytes"
        client.launch(device, "add", [ra, rb], [out])
        client.launch(device, "mul", [out, rb], [out])
        m = rng.standard_normal((32, 48)).astype(np.float32)
        w = rng.standard_normal((48, 16)).astype(np.float32)
        rm, rw = upload(client, device, m), upload(client, device, w)
        prod = TensorRef.contiguous(client.alloc(device, 32 * 16 * 4), "float32", (32, 16))
        client.launch(device, "matmul", [rm, rw], [prod])
        started = time.perf_counter()
        client.synchronize()
        latencies.append(time.perf_counter() - started)
        np.testing.assert_allclose(download(client, out), (a + b) * b, rtol=1e-6)
        np.testing.assert_allclose(download(client, prod), m @ w, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(download(client, anchor_ref), anchor)
        for ref in (ra, rb, out, rm, rw, prod):
            client.free(ref.buffer)
        rounds += 1
        calls += 12
    client.synchronize()  # the frees ran, with no error
    client.close()
    return {"rounds": rounds, "calls": calls, "sync_ms_median": _median_ms(latencies)}


def batcher(endpoint: str, seconds: float, seed: int, messages: int) -> dict:
    """Queues long batches (the daemon computes for a second or more) and checks the result."""
    rng = np.random.default_rng(seed)
    client = SimClient(endpoint, timeout=300)
    x = rng.standard_normal((256, 256)).astype(np.float32)
    w = (rng.standard_normal((256, 256)) / 16).astype(np.float32)
    rx, rw = upload(client, 1, x), upload(client, 1, w)
    print("ready", flush=True)
    batches = 0
    steps = 300
    deadline = time.monotonic() + seconds
    while (time.monotonic() < deadline and not _told_to_stop()) or batches == 0:
        expected = x.copy()
        for _ in range(steps):
            expected = np.tanh(expected @ w)
        y = upload(client, 1, x)
        for _ in range(steps):
            client.launch(1, "matmul", [y, rw], [y])
            client.launch(1, "tanh", [y], [y])
        client.synchronize()
        np.testing.assert_allclose(download(client, y), expected, rtol=1e-4, atol=1e-5)
        client.free(y.buffer)
        batches += 1
    np.testing.assert_array_equal(download(client, rx), x)
    client.close()
    return {"batches": batches, "ops": batches * steps * 2}


def hostile(endpoint: str, seconds: float, seed: int, messages: int) -> dict:
    """Sends what no honest client would, and checks nothing it must not do gets through."""
    attack = Hostile(endpoint, seed)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while attack.sent < messages or (not messages and time.monotonic() < deadline):
        attack.one()
    return attack.close()


class Hostile:
    """One hostile client: its own buffers, a raw kpt.wire Client, raw socket bytes."""

    def __init__(self, endpoint: str, seed: int):
        self.endpoint = endpoint
        self.rng = np.random.default_rng(seed)
        self.sent = 0
        self.codes: dict[str, int] = {}
        self.breaches: list[str] = []  # things that must have been refused, and were not
        self.internal: list[str] = []
        self.reconnects = 0
        self.wire = self._connect()
        self.own = {int(self.wire.call("alloc", {"device": 0, "nbytes": 256}).header["buffer"])}
        self.sim = SimClient(endpoint, timeout=60)  # tokenless, as a stranger would be
        self.attacks = (
            (0.45, self._garbage),
            (0.2, self._foreign_buffer),
            (0.1, self._admin_without_token),
            (0.1, self._huge),
            (0.1, self._raw_bytes),
            (0.05, self._sim_admin),
        )

    def one(self) -> None:
        draw = self.rng.random()
        chosen = self.attacks[-1][1]
        for share, attack in self.attacks:
            if draw < share:
                chosen = attack
                break
            draw -= share
        try:
            chosen()
        except (TransportError, WireError) as exc:
            # The daemon may drop a connection that broke the framing: that is allowed.
            self._count(type(exc).__name__)
            self.wire.close()
            self.wire = self._connect()
            self.reconnects += 1
        self.sent += 1

    def close(self) -> dict:
        self.wire.close()
        self.sim.close()
        return {
            "messages": self.sent,
            "codes": dict(sorted(self.codes.items())),
            "breaches": self.breaches[:10],
            "internal": self.internal[:10],
            "reconnects": self.reconnects,
        }

    # -- attacks -------------------------------------------------------------------------------
    def _garbage(self) -> None:
        kind = str(self._pick(KINDS))
        header = {str(self._pick(FIELDS)): self._value() for _ in range(self.rng.integers(6))}
        arrays = (
            [np.zeros(int(self.rng.integers(0, 64)), np.uint8)] if self.rng.random() < 0.2 else []
        )
        self._call(kind, header, arrays)

    def _foreign_buffer(self) -> None:
        buffer = int(self.rng.integers(-20, 400))
        if buffer in self.own:
            return
        which = self.rng.integers(3)
        if which == 0:
            header = {"buffer": buffer, "offset": 0, "nbytes": 16}
            if self._call("read", header) is not None:
                self.breaches.append(f"read another client's buffer {buffer}")
        elif which == 1:
            header = {"buffer": buffer, "offset": 0, "stream": 0}
            if self._call("write", header, [np.full(16, 0xAB, np.uint8)]) is not None:
                self.breaches.append(f"wrote another client's buffer {buffer}")
        else:
            if self._call("free", {"buffer": buffer}) is not None:
                self.breaches.append(f"freed another client's buffer {buffer}")

    def _admin_without_token(self) -> None:
        kind = str(self._pick(ADMIN))
        header = {"kind": str(self._pick(["device_lost", "hang", "straggler"])),
                  "device": 0, "factor": float(self._pick(HUGE))}  # fmt: skip
        if self.rng.random() < 0.5:
            header["token"] = "0" * 64  # a guess
        if self._call(kind, header, expect="AccessDeniedError") is not None:
            self.breaches.append(f"{kind} ran without the owner's token")

    def _huge(self) -> None:
        size = self._pick(HUGE)
        kind, header = [
            ("alloc", {"device": 0, "nbytes": size}),
            ("lease", {"device": 0, "need": size, "want": size}),
            ("read", {"buffer": next(iter(self.own)), "offset": 0, "nbytes": size}),
            ("alloc", {"device": int(self.rng.integers(-3, 1 << 30)), "nbytes": 64}),
        ][self.rng.integers(4)]
        reply = self._call(kind, header)
        if kind == "alloc" and reply is not None:
            self.own.add(int(reply.header["buffer"]))  # a legal 64-byte alloc: ours now

    def _sim_admin(self) -> None:
        try:
            [self.sim.reset, lambda: self.sim.inject_fault("straggler", device=0, factor=1e300)][
                self.rng.integers(2)
            ]()
        except AccessDeniedError:
            self._count("AccessDeniedError")
            return
        except Exception as exc:  # any other outcome is a finding, reported
            self.breaches.append(f"SimClient admin without token: {type(exc).__name__}: {exc}")
            return
        self.breaches.append("SimClient admin op ran without the owner's token")

    def _raw_bytes(self) -> None:
        """Bytes on the daemon's unix socket that no kpt.wire client would send."""
        path = self.endpoint[len("unix://") :]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(path)
            which = self.rng.integers(5)
            hello = b"KPTU" + bytes([6]) + b"hostil"
            if which == 0:
                sock.sendall(self.rng.bytes(int(self.rng.integers(1, 512))))
            elif which == 1:  # a table announcing 3 GiB, then nothing
                sock.sendall(hello + struct.pack(">4I", 3, 4, 4, 3 << 30) + b"KPT\x00")
            elif which == 2:  # a frame count the stream cannot hold
                sock.sendall(hello + struct.pack(">I", 1 << 30))
            elif which == 3:  # a whole message of random frames
                frames = [self.rng.bytes(int(self.rng.integers(0, 40))) for _ in range(3)]
                table = struct.pack(f">{len(frames) + 1}I", len(frames), *map(len, frames))
                sock.sendall(hello + table + b"".join(frames))
            else:  # half a greeting
                sock.sendall(hello[:3])
            self._count("raw")
        except OSError as exc:
            self._count(f"raw {type(exc).__name__}")
        finally:
            sock.close()

    # -- helpers ---------------------------------------------------------------------------------
    def _connect(self) -> Client:
        # Heartbeats as SimClient picks them: on unix:// the daemon answers none while another
        # client's batch computes, and a 1 s interval would call it dead after 3 s of that.
        return Client(self.endpoint, timeout=60, heartbeat_interval=30)

    def _pick(self, choices):
        return choices[int(self.rng.integers(len(choices)))]

    def _value(self):
        pick = self.rng.integers(6)
        if pick == 0:
            return self._pick(HUGE)
        if pick == 1:
            return int(self.rng.integers(-5, 400))
        if pick == 2:
            return str(self._pick(["add", "matmul", "float32", "device_lost", ""]))
        if pick == 3:
            return [int(self.rng.integers(-2, 300)), 0, "float32", [4], [1]]
        if pick == 4:
            return [[str(self._pick(KINDS)), {"buffer": int(self.rng.integers(400))}]]
        return None

    def _call(self, kind: str, header: dict, arrays=(), expect: str | None = None):
        """The reply, or None when the daemon refused (counted by error code)."""
        try:
            reply = self.wire.call(kind, header, arrays=list(arrays))
        except (TypeError, ValueError, OverflowError) as exc:  # refused before it was sent
            self._count(f"client {type(exc).__name__}")
            return None
        except RemoteError as exc:
            self._count(exc.code)
            if exc.code == "internal":
                self.internal.append(f"{kind} {header!r:.120}: {exc.message:.200}")
            if expect is not None and exc.code != expect:
                self.breaches.append(f"{kind} answered {exc.code}, not {expect}")
            return None
        self._count("ok")
        return reply

    def _count(self, code: str) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1


def _told_to_stop() -> bool:
    """A line (or EOF) on stdin: the parent wants this client to wrap up."""
    return bool(select.select([sys.stdin], [], [], 0)[0])


def _median_ms(samples: list[float]) -> float:
    return float(np.median(samples) * 1e3) if samples else float("nan")


def main() -> None:
    role, endpoint, seconds, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    messages = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    try:
        result = {"role": role, "ok": True, **globals()[role](endpoint, seconds, seed, messages)}
        if result.get("breaches") or result.get("internal"):
            result["ok"] = False
    except Exception as exc:
        result = {"role": role, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


# -- the parent's side ----------------------------------------------------------------------------
class Soak:
    """Starts the role processes on one daemon, collects their JSON lines, reaps every one."""

    def __init__(self, endpoint: str, seconds: float, hostile_messages: int = 0, seed: int = 0):
        self.endpoint = endpoint
        self.seconds = seconds
        self.hostile_messages = hostile_messages
        self.seed = seed
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, roles=ROLES) -> None:
        for index, role in enumerate(roles):
            messages = self.hostile_messages if role == "hostile" else 0
            command = [sys.executable, __file__, role, self.endpoint, str(self.seconds),
                       str(self.seed + index), str(messages)]  # fmt: skip
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            self.processes[role] = process
            line = process.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"{role} client did not start: {line or process.wait(30)!r}")

    def finish(self, timeout: float) -> dict[str, dict]:
        """Wait for the hostile one; then tell the others to wrap up (the idle one to check);
        every result, waiting up to `timeout` s in all."""
        deadline = time.monotonic() + timeout
        results: dict[str, dict] = {}
        if "hostile" in self.processes:
            results["hostile"] = self._result("hostile", self.processes["hostile"], deadline)
        for role, process in self.processes.items():
            if role != "hostile" and process.poll() is None:
                try:
                    process.stdin.write("stop\n")
                    process.stdin.flush()
                except BrokenPipeError:
                    pass  # it ended on its own: its result says how
        for role, process in self.processes.items():
            if role != "hostile":
                results[role] = self._result(role, process, deadline)
        return results

    def reap(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(30)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()

    def _result(self, role: str, process: subprocess.Popen, deadline: float) -> dict:
        try:
            # wait, then read: communicate() would read the pipe past what readline() buffered
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
            return {"role": role, "ok": False, "error": "did not finish in time"}
        lines = [line for line in process.stdout.read().splitlines() if line.startswith("{")]
        if not lines:
            return {"role": role, "ok": False, "error": f"exited {process.returncode}, no result"}
        return json.loads(lines[-1])


def daemon_rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


if __name__ == "__main__":
    main()
