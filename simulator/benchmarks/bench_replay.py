"""Timing-only replay throughput: simulated ops per second of wall time.

Baseline measured in the same run (issue 12): the same ops as a naive simpy model, one
process and one Resource request per op (each op's process waits for the op before it on its
stream, takes its device's compute engine, and holds it for the op's time). For this trace
(one stream per device) both give the same timeline, which the script checks. kpt.sim's
engine runs each stream as one simpy process over the chip's resources and waits once for a
run of uncontended kernels. Prints a table with the ratio.

Usage: python benchmarks/bench_replay.py [--ops N]
"""

from __future__ import annotations

import argparse
import time

import simpy

from kpt.sim import load_profile, op_time, replay

N_OPS = 200_000
TARGET_RATIO = 2.0  # the issue's target against the naive model


def _ops(n: int) -> list[dict]:
    kinds = [
        {"class": "matmul", "flops": 2 * 4096**3, "bytes": 3 * 4096**2 * 2, "dtype": "bf16"},
        {"class": "elementwise", "flops": 4096**2, "bytes": 3 * 4096**2 * 2, "dtype": "bf16"},
        {"class": "norm", "flops": 5 * 4096**2, "bytes": 2 * 4096**2 * 2, "dtype": "bf16"},
    ]
    return [{"op": "launch", "device": i % 8, "stream": i % 2, **kinds[i % 3]} for i in range(n)]


def naive_simpy(ops: list[dict]) -> tuple[float, float]:
    """(ops/s, simulated end): a process and a Resource request per op."""
    profile = load_profile("h100-sxm")
    env = simpy.Environment()
    engines = {d: simpy.Resource(env, capacity=1) for d in {op["device"] for op in ops}}
    issue = profile.host_issue_s
    issued_on: dict[int, int] = {}
    previous: dict[tuple[int, int], simpy.Event] = {}

    def run_op(op, after, done, ready):
        if after is not None:
            yield after
        if ready > env.now:
            yield env.timeout(ready - env.now)
        with engines[op["device"]].request() as turn:
            yield turn
            t = op_time(profile, op["class"], op["flops"], op["bytes"], op["dtype"])
            yield env.timeout(t - profile.queued_latency_s)
        done.succeed()

    start = time.perf_counter()
    for op in ops:
        device, key = op["device"], (op["device"], op["stream"])
        issued_on[device] = issued_on.get(device, 0) + 1
        ready = issued_on[device] * issue + profile.queued_latency_s
        done = env.event()
        env.process(run_op(op, previous.get(key), done, ready))
        previous[key] = done
    env.run()
    return len(ops) / (time.perf_counter() - start), env.now


def per_stream_simpy(ops: list[dict]) -> float:
    """ops/s of a leaner simpy model: a process per stream, a Resource request per op."""
    profile = load_profile("h100-sxm")
    env = simpy.Environment()
    engines = {d: simpy.Resource(env, capacity=1) for d in {op["device"] for op in ops}}
    streams: dict[tuple[int, int], list[dict]] = {}
    for op in ops:
        streams.setdefault((op["device"], op["stream"]), []).append(op)

    def stream(device: int, queue: list[dict]):
        for op in queue:
            with engines[device].request() as turn:
                yield turn
                yield env.timeout(op_time(profile, op["class"], op["flops"], op["bytes"],
                                          op["dtype"]))  # fmt: skip

    start = time.perf_counter()
    for (device, _), queue in streams.items():
        env.process(stream(device, queue))
    env.run()
    return len(ops) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=N_OPS)
    n = ap.parse_args().ops
    ops = _ops(n)
    result = replay({"profile": "h100-sxm", "devices": 8, "ops": ops})
    kpt_rate = n / result["wall_s"]
    baseline, baseline_end = naive_simpy(ops)
    ratio = kpt_rate / baseline
    lean = per_stream_simpy(ops)
    print(f"timing-only replay, {n:,} ops on 8 x h100-sxm")
    print(f"{'what':<44}{'ops/s':>12}{'ratio':>8}")
    print(f"{'kpt.sim replay (simpy processes per stream)':<44}{kpt_rate:>12,.0f}{ratio:>8.2f}")
    print(f"{'baseline: simpy process + Resource per op':<44}{baseline:>12,.0f}{1.0:>8.2f}")
    print(f"{'simpy process per stream + Resource per op':<44}{lean:>12,.0f}"
          f"{lean / baseline:>8.2f}")  # fmt: skip
    print(f"target ratio >= {TARGET_RATIO:.1f}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    print(
        f"simulated end: {result['predicted_s'] * 1e3:.3f} ms (naive model: "
        f"{baseline_end * 1e3:.3f} ms)"
    )


if __name__ == "__main__":
    main()
