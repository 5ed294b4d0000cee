"""The long soak (issue 10): one daemon, an honest client checking values against numpy, one
computing long batches, one idle holding memory -- first alone (the baseline), then with a
hostile client sending at least 30,000 messages no honest client would. The daemon's RSS is
sampled throughout and must stay bounded; every check of every honest client must hold.

    python simulator/benchmarks/bench_soak.py [--messages 30000] [--baseline-s 20]

Exits 1 if a client's check failed, the daemon died, or its RSS grew past the bound.
The short version runs in CI: tests/test_daemon_soak.py (same client processes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from soak_clients import Soak, daemon_rss_bytes

from kpt.sim import SimClient, start_daemon

MiB = 1 << 20
RSS_GROWTH_BOUND = 256 * MiB  # over the baseline's peak, for the whole hostile phase
SAMPLE_S = 0.5


class RssSampler:
    """Samples a process's RSS every SAMPLE_S seconds on a thread, tagged by phase."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, str, int]] = []  # (seconds since start, phase, bytes)
        self.phase = "start"
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def of(self, phase: str) -> list[int]:
        return [rss for _, p, rss in self.samples if p == phase]

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                rss = daemon_rss_bytes(self.pid)
            except (OSError, RuntimeError):
                return  # the daemon is gone; the run reports it
            self.samples.append((time.monotonic() - self._started, self.phase, rss))


def run_phase(endpoint: str, roles, seconds: float, messages: int, seed: int) -> dict:
    soak = Soak(endpoint, seconds, hostile_messages=messages, seed=seed)
    started = time.monotonic()
    try:
        soak.start(roles)
        results = soak.finish(timeout=max(seconds, 60) + messages / 50 + 120)
    finally:
        soak.reap()
    results["_seconds"] = time.monotonic() - started
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000, help="hostile messages")
    parser.add_argument("--baseline-s", type=float, default=20.0, help="baseline phase length")
    parser.add_argument(
        "--trace-events", type=int, default=None,
        help="the daemon's --trace-events (default: its own); a small one shows RSS level off",
    )  # fmt: skip
    args = parser.parse_args()
    if args.messages < 1:
        parser.error(f"--messages must be at least 1, got {args.messages}")

    extra = () if args.trace_events is None else ("--trace-events", str(args.trace_events))
    with (
        start_daemon("test-asic", devices=2, extra_args=extra) as daemon,
        RssSampler(daemon.pid) as rss,
    ):
        rss.phase = "baseline"
        honest_roles = ("idle", "honest", "batcher")
        baseline = run_phase(daemon.endpoint, honest_roles, args.baseline_s, 0, seed=1)
        rss.phase = "soak"
        # The honest clients work until the hostile one has sent all its messages.
        soak = run_phase(daemon.endpoint, (*honest_roles, "hostile"), 86_400, args.messages, 2)
        rss.phase = "after"
        alive = daemon.alive()
        with SimClient(daemon.endpoint, timeout=60) as check:
            stats = [check.memory_stats(d) for d in (0, 1)]
        time.sleep(2 * SAMPLE_S)
    failures = [
        f"{phase} {role}: {result.get('error') or result}"
        for phase, results in (("baseline", baseline), ("soak", soak))
        for role, result in results.items()
        if not role.startswith("_") and not result["ok"]
    ]
    if not alive:
        failures.append("the daemon died")
    report(baseline, soak, rss, stats)
    base_peak = max(rss.of("baseline"), default=0)
    soak_peak = max(rss.of("soak"), default=0)
    if soak_peak > base_peak + RSS_GROWTH_BOUND:
        failures.append(
            f"daemon RSS peaked at {soak_peak / MiB:.0f} MiB under the hostile client, over the "
            f"baseline's {base_peak / MiB:.0f} MiB + {RSS_GROWTH_BOUND / MiB:.0f} MiB bound"
        )
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


def report(baseline: dict, soak: dict, rss: RssSampler, stats: list[dict]) -> None:
    hostile = soak["hostile"]
    print("\nsoak: one daemon (test-asic x 2); honest, long-batch and idle client processes,")
    print(f"then the same with a hostile one ({hostile.get('messages', 0):,} messages)")
    heads = ("s", "hostile msgs", "honest rounds", "sync ms p50", "batches", "RSS p50 MiB",
             "RSS max MiB")  # fmt: skip
    print(f"| {'phase':<24} | " + " | ".join(f"{h:>13}" for h in heads) + " |")
    print(f"|{'-' * 26}|" + "|".join("-" * 15 for _ in heads) + "|")
    rows = {}
    for name, results, phase in (("baseline (no hostile)", baseline, "baseline"),
                                 ("with hostile client", soak, "soak")):  # fmt: skip
        samples = rss.of(phase) or [0]
        honest = results.get("honest", {})
        row = (
            results["_seconds"], results.get("hostile", {}).get("messages", 0),
            honest.get("rounds", 0), honest.get("sync_ms_median", float("nan")),
            results.get("batcher", {}).get("batches", 0),
            statistics.median(samples) / MiB, max(samples) / MiB,
        )  # fmt: skip
        rows[phase] = row
        cells = (f"{row[0]:.1f}", f"{row[1]:,}", f"{row[2]:,}", f"{row[3]:.2f}", f"{row[4]}",
                 f"{row[5]:.1f}", f"{row[6]:.1f}")  # fmt: skip
        print(f"| {name:<24} | " + " | ".join(f"{c:>13}" for c in cells) + " |")

    base, hard = rows["baseline"], rows["soak"]
    print(f"ratios hostile/baseline: honest sync p50 {hard[3] / base[3]:.2f}x, "
          f"daemon RSS max {hard[6] / base[6]:.2f}x (bound: baseline max + "
          f"{RSS_GROWTH_BOUND / MiB:.0f} MiB)")  # fmt: skip
    print("hostile replies by code:", ", ".join(f"{k} {v:,}" for k, v in hostile["codes"].items()))
    print(f"hostile breaches: {len(hostile.get('breaches', []))}, internal errors: "
          f"{len(hostile.get('internal', []))}; device memory allocated after all left: "
          f"{[s['allocated'] for s in stats]} bytes")  # fmt: skip
    late = [(t, value / MiB) for t, phase, value in rss.samples if phase == "soak"]
    late = late[len(late) // 2 :]
    if len(late) > 2:
        slope = statistics.linear_regression([t for t, _ in late], [m for _, m in late]).slope
        print(f"daemon RSS slope over the second half of the hostile phase: {slope * 60:+.2f} "
              "MiB/min")  # fmt: skip
    print("\ndaemon RSS over time (every ~5 s)")
    print(f"| {'t s':>6} | {'phase':<8} | {'RSS MiB':>8} |")
    print(f"|{'-' * 8}|{'-' * 10}|{'-' * 10}|")
    step = max(1, int(5 / SAMPLE_S))
    for t, phase, value in rss.samples[::step]:
        print(f"| {t:>6.1f} | {phase:<8} | {value / MiB:>8.1f} |")


if __name__ == "__main__":
    sys.exit(main())
