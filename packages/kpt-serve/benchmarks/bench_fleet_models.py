"""Several models on one worker: what a memory budget that holds only some of them costs.

Three random-weight GPT-2-style models share one CPU worker. The baseline's budget holds all
three; the budgeted run's holds two, so the least recently used idle model is evicted and
reloaded as traffic moves between them. The same Poisson workload (one `kpt-serve bench`
load generator per model, over HTTP, at once) runs against each, and the report gives the
memory each held, the loads and evictions, and TTFT p99 and throughput as ratios against the
baseline measured in the same run.

    python benchmarks/bench_fleet_models.py
    python benchmarks/bench_fleet_models.py --width 256 --layers 4 --num-prompts 40
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import torch

from kpt.serve.fleet import Fleet, WorkerSpec, footprint_bytes
from kpt.serve.fleet._api import BackgroundHttp, FleetApi
from kpt.serve.fleet._bench import BenchConfig, run_bench
from kpt.serve.fleet.demo import write_tiny_gpt2

MODELS = ("a", "b", "c")
KV_BLOCKS = 32


def run(specs: list[WorkerSpec], args: argparse.Namespace) -> dict:
    with Fleet(specs) as fleet:
        fleet.wait_ready(timeout=300)
        http = BackgroundHttp(FleetApi(fleet.router, fleet.metrics, fleet.model_dirs).app)
        results: dict[str, dict] = {}
        try:

            def load(i: int, model: str) -> None:
                config = BenchConfig(
                    url=http.url, model=model, num_prompts=args.num_prompts,
                    request_rate=args.request_rate, input_len=16, output_len=8, seed=i,
                )  # fmt: skip
                results[model] = run_bench(config)

            threads = [threading.Thread(target=load, args=(i, m)) for i, m in enumerate(MODELS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            http.close()
        (worker,) = fleet.router.workers()
        models = worker.describe()["models"]
    ttft_p99 = max(r["ttft_ms"]["p99"] for r in results.values())
    completed = sum(r["completed"] for r in results.values())
    duration = max(r["duration_s"] for r in results.values())
    return {
        "memory_mib": models["memory_budget"] / 2**20,
        "loads": models["loads"],
        "evictions": models["evictions"],
        "ttft_p99_ms": ttft_p99,
        "req_per_s": completed / duration,
        "failed": sum(r["failed"] for r in results.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=24, help="requests per model")
    parser.add_argument("--request-rate", type=float, default=4.0, help="per model, req/s")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folders = {
            m: str(write_tiny_gpt2(Path(scratch) / m, seed=i, layers=args.layers, width=args.width))
            for i, m in enumerate(MODELS)
        }
        each = max(footprint_bytes(f, torch.float32, KV_BLOCKS) for f in folders.values())
        rows = {}
        for name, held in (("all three fit (baseline)", 3.2), ("two fit (LRU)", 2.2)):
            spec = WorkerSpec(
                model="a", model_dir=folders["a"], threads=1, num_kv_blocks=KV_BLOCKS,
                extra_models={m: folders[m] for m in MODELS[1:]},
                memory_budget_mb=held * each / 2**20,
            )  # fmt: skip
            rows[name] = run([spec], args)
    base = rows["all three fit (baseline)"]
    print(
        "\n| budget | memory MiB | loads | evictions | TTFT p99 ms | vs baseline | req/s "
        "| vs baseline | failed |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, row in rows.items():
        print(
            f"| {name} | {row['memory_mib']:.1f} | {row['loads']} | {row['evictions']} | "
            f"{row['ttft_p99_ms']:.0f} | {row['ttft_p99_ms'] / base['ttft_p99_ms']:.2f}x | "
            f"{row['req_per_s']:.2f} | {row['req_per_s'] / base['req_per_s']:.2f}x | "
            f"{row['failed']} |"
        )


if __name__ == "__main__":
    main()
