"""Timing-only replay throughput: simulated ops per second of wall time.

Baseline measured in the same run: the same ops modelled the classic simpy way (a process
per stream, a Resource per device's compute engine, a Timeout of op_time per op), which gives
the same timeline for this uncontended trace. Prints a table with the ratio.
"""

from __future__ import annotations

import time

import simpy

from kpt.sim import load_profile, op_time, replay

N_OPS = 200_000
TARGET = 100_000  # ops/s the brief asks for


def _ops(n: int) -> list[dict]:
    kinds = [
        {"class": "matmul", "flops": 2 * 4096**3, "bytes": 3 * 4096**2 * 2, "dtype": "bf16"},
        {"class": "elementwise", "flops": 4096**2, "bytes": 3 * 4096**2 * 2, "dtype": "bf16"},
        {"class": "norm", "flops": 5 * 4096**2, "bytes": 2 * 4096**2 * 2, "dtype": "bf16"},
    ]
    return [{"op": "launch", "device": i % 8, "stream": i % 2, **kinds[i % 3]} for i in range(n)]


def _simpy_baseline(ops: list[dict]) -> tuple[float, float]:
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
                t = op_time(profile, op["class"], op["flops"], op["bytes"], op["dtype"])
                yield env.timeout(t)

    for (device, _), queue in streams.items():
        env.process(stream(device, queue))
    start = time.perf_counter()
    env.run()
    return len(ops) / (time.perf_counter() - start), env.now


def main() -> None:
    ops = _ops(N_OPS)
    result = replay({"profile": "h100-sxm", "devices": 8, "ops": ops})
    kpt_rate = N_OPS / result["wall_s"]
    baseline, baseline_end = _simpy_baseline(ops)
    print(f"timing-only replay, {N_OPS:,} ops on 8 x h100-sxm")
    print(f"{'what':<34}{'ops/s':>14}{'ratio':>8}")
    print(f"{'kpt.sim replay':<34}{kpt_rate:>14,.0f}{kpt_rate / baseline:>8.2f}")
    print(f"{'baseline: simpy process/Resource':<34}{baseline:>14,.0f}{1.0:>8.2f}")
    print(f"{'target':<34}{TARGET:>14,.0f}")
    print(
        f"predicted total: {result['predicted_s'] * 1e3:.3f} ms simulated "
        f"(simpy baseline: {baseline_end * 1e3:.3f} ms)"
    )


if __name__ == "__main__":
    main()
