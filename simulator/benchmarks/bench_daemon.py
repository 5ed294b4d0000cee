"""Daemon benchmarks: each kpt-sim figure next to a baseline measured in the same run.

    python simulator/benchmarks/bench_daemon.py [--quick]

1. small op round trip with values (launch + blocking read), daemon in another process,
   vs a bare kpt.wire echo call to another process over the same unix:// transport (the floor);
2. 1,000 asynchronous launches then one synchronize, per op, vs the same ops on local numpy;
3. timing-only daemon RSS after an 80 GB allocation and 10,000 ops on it, vs the idle daemon.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from kpt.sim import SimClient, TensorRef, start_daemon
from kpt.wire import Client

ECHO_SERVER = """
import sys, time
from kpt.wire import Server
server = Server(sys.argv[1])
server.register("echo", lambda msg, client: (msg.header, msg.arrays))
server.start()
print("ready", flush=True)
sys.stdin.readline()
server.close()
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc: ticks of 1/100 s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def bench_round_trip(repeats: int) -> tuple[float, float, float, float]:
    with start_daemon(profile="h100-sxm") as daemon, SimClient(daemon.endpoint) as c:
        buffer = c.alloc(0, 64)
        c.write(buffer, 0, np.ones(16, np.float32))
        x = TensorRef.contiguous(buffer, "float32", (16,))

        def op_and_read():
            c.launch(0, "add", [x, x], [x])
            c.read(buffer, 0, 64)

        timed(op_and_read, 200)  # warm up
        daemon_cpu, client_cpu = cpu_s(daemon.pid), time.process_time()
        sim = statistics.median(timed(op_and_read, repeats))
        daemon_cpu = (cpu_s(daemon.pid) - daemon_cpu) / repeats
        client_cpu = (time.process_time() - client_cpu) / repeats
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        endpoint = f"unix://{folder}/echo.sock"  # the daemon's own transport (start_daemon's)
        server = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, endpoint],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            server.stdout.readline()
            with Client(endpoint) as echo:
                payload = np.ones(16, np.float32)
                timed(lambda: echo.call("echo", {"n": 1}, [payload]), 200)
                wire = statistics.median(
                    timed(lambda: echo.call("echo", {"n": 1}, [payload]), repeats)
                )
        finally:
            server.stdin.close()
            server.wait(10)
    return sim, wire, daemon_cpu, client_cpu


def bench_async_launches(ops: int) -> tuple[float, float]:
    with start_daemon(profile="h100-sxm") as daemon, SimClient(daemon.endpoint) as c:
        buffer = c.alloc(0, 256)
        c.write(buffer, 0, np.ones(64, np.float32))
        x = TensorRef.contiguous(buffer, "float32", (64,))
        for _ in range(100):
            c.launch(0, "mul", [x, x], [x])
        c.synchronize()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(ops):
                c.launch(0, "mul", [x, x], [x])
            c.synchronize()
            best = min(best, (time.perf_counter() - start) / ops)
    local = np.ones(64, np.float32)
    start = time.perf_counter()
    for _ in range(ops):
        np.multiply(local, local, out=local)
    return best, (time.perf_counter() - start) / ops


def bench_timing_only_rss(ops: int) -> tuple[float, float]:
    with (
        start_daemon(profile="h100-sxm", numerics=False) as daemon,
        SimClient(daemon.endpoint) as c,
    ):
        c.devices()
        idle = rss_mb(daemon.pid)
        buffer = c.alloc(0, 80 * 10**9)
        n = 8192
        a = TensorRef.contiguous(buffer, "bfloat16", (n, n))
        out = TensorRef(buffer, 2 * n * n, "bfloat16", (n, n), (n, 1))
        for _ in range(ops):
            c.launch(0, "matmul", [a, a], [out])
        c.synchronize()
        loaded = rss_mb(daemon.pid)
    return loaded, idle


def main() -> None:
    quick = "--quick" in sys.argv
    rt_sim, rt_wire, daemon_cpu, client_cpu = bench_round_trip(500 if quick else 3000)
    per_op, per_op_numpy = bench_async_launches(1000)
    rss, rss_idle = bench_timing_only_rss(2000 if quick else 10_000)
    rows = [
        ("small op round trip, median (us)", rt_sim * 1e6, "kpt.wire echo", rt_wire * 1e6, 100),
        ("1,000 async ops + sync, per op (us)", per_op * 1e6, "local numpy op", per_op_numpy * 1e6,
         40),
        ("timing-only 80 GB + ops, daemon RSS (MB)", rss, "idle daemon", rss_idle, 200),
    ]  # fmt: skip
    print(
        textwrap.dedent(f"""
        kpt-sim daemon benchmarks (python {sys.version.split()[0]}, numpy {np.__version__})
        {"measure":<42} {"kpt-sim":>9} {"baseline":<16} {"value":>9} {"ratio":>7} {"target":>7}
        """).strip()
    )
    for name, value, baseline, base_value, target in rows:
        ok = "ok" if value <= target else "MISSED"
        print(
            f"{name:<42} {value:>9.1f} {baseline:<16} {base_value:>9.1f} "
            f"{value / base_value:>6.1f}x {'<= ' + str(target):>7} {ok}"
        )
    print(
        f"round trip CPU: daemon {daemon_cpu * 1e6:.0f} us, client {client_cpu * 1e6:.0f} us; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times stretch "
        "with load; the wire echo is the transport floor measured alongside)"
    )


if __name__ == "__main__":
    main()
