"""Routing on a heterogeneous fleet: predicted completion time against round-robin and p2c.

One fleet, built once: the same tiny random-weight GPT-2 on the host CPU and on a simulated
chip (kpt_sim: its wall-clock speed here is the simulator's, far below the CPU's), behind the
router and the HTTP API of this process. For each routing policy in turn, `kpt-serve bench`'s
load generator sends the same Poisson workload over HTTP and reports TTFT p99 and goodput
under an SLO; ratios are against round-robin, measured in the same run.

    python benchmarks/bench_fleet.py                          # cpu + kpt_sim:0
    python benchmarks/bench_fleet.py --workers cpu,cpu --num-prompts 80 --request-rate 8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from kpt.serve.fleet import Fleet, WorkerSpec, make_policy
from kpt.serve.fleet._api import BackgroundHttp, FleetApi
from kpt.serve.fleet._bench import BenchConfig, run_bench

POLICIES = ("round_robin", "p2c", "predicted")


def make_model(folder: Path) -> Path:
    import transformers  # the bench extra: the random-weight model

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, n_positions=512, vocab_size=512
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="cpu,kpt_sim:0")
    parser.add_argument("--num-prompts", type=int, default=60)
    parser.add_argument("--request-rate", type=float, default=6.0)
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--slo-ttft-ms", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "tiny")
        specs = [
            WorkerSpec(
                model="tiny",
                model_dir=str(model_dir),
                device=d,
                threads=args.threads,
                num_kv_blocks=256,
            )
            for d in args.workers.split(",")
        ]
        fleet = Fleet(specs).start()
        http = None
        try:
            fleet.wait_ready(timeout=600)
            http = BackgroundHttp(FleetApi(fleet.router, fleet.metrics, fleet.model_dirs).app)
            config = BenchConfig(
                url=http.url, model="tiny", num_prompts=args.num_prompts,
                request_rate=args.request_rate, input_len=args.input_len,
                output_len=args.output_len, slo_ttft_ms=args.slo_ttft_ms,
            )  # fmt: skip
            # Warm-up: every worker measures its speed (the predicted policy's input).
            fleet.router.policy = make_policy("round_robin")
            run_bench(
                BenchConfig(
                    url=http.url,
                    model="tiny",
                    num_prompts=4 * len(specs),
                    input_len=8,
                    output_len=4,
                )
            )
            results = {}
            for name in POLICIES:
                fleet.router.policy = make_policy(name)
                results[name] = run_bench(config)
            _print(args, specs, results)
        finally:
            if http is not None:
                http.close()
            fleet.close()


def _print(args, specs, results) -> None:
    base = results["round_robin"]
    print(
        f"fleet: {', '.join(s.device for s in specs)}; {args.num_prompts} requests, Poisson "
        f"{args.request_rate}/s, prompt {args.input_len}, output {args.output_len}, "
        f"SLO TTFT {args.slo_ttft_ms:.0f} ms"
    )
    print(
        f"{'policy':<12} {'TTFT p50 ms':>11} {'TTFT p99 ms':>11} {'E2E p99 ms':>10} "
        f"{'goodput r/s':>11} {'out tok/s':>9} {'p99 vs rr':>9} {'goodput vs rr':>13}"
    )
    for name, r in results.items():
        p99_ratio = base["ttft_ms"]["p99"] / r["ttft_ms"]["p99"] if r["ttft_ms"]["p99"] else 0.0
        good_ratio = r["goodput"] / base["goodput"] if base["goodput"] else float("inf")
        print(
            f"{name:<12} {r['ttft_ms']['median']:>11.1f} {r['ttft_ms']['p99']:>11.1f} "
            f"{r['e2e_ms']['p99']:>10.1f} {r['goodput']:>11.2f} {r['output_throughput']:>9.1f} "
            f"{p99_ratio:>8.2f}x {good_ratio:>12.2f}x"
        )
        if r["failed"]:
            print(f"  {r['failed']} failed: {r['errors']}")


if __name__ == "__main__":
    main()
