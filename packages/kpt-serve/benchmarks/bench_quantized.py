"""Quantized variants against bf16 on one device: the same engine, workloads and model of
Llama-3-8B's shape (random weights), served as bf16, int8 weight-only and fp8.

    python benchmarks/bench_quantized.py --device cuda --out gpu.json      # on the GPU
    KPT_SIM_PROFILE=h200 KPT_SIM_NUMERICS=0 \\
        python benchmarks/bench_quantized.py --device kpt_sim --out sim.json
    python benchmarks/bench_quantized.py --compare gpu.json sim.json       # sim against real
    python benchmarks/bench_quantized.py --kernels [--rows 1,16,64]        # one layer, CUDA

Each variant's figures are printed as a ratio to bf16 measured in the same run. fp8 runs where
the device advertises it (kpt.hal feature "fp8"). --kernels times one linear layer of each
Llama-8B shape, int8 (Triton) and fp8 (torch._scaled_mm) against bf16 (cuBLAS), per batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_sim_vs_gpu import measure

VARIANTS = (None, "int8", "fp8")
MEASURES = (("tpot_ms_median", "TPOT ms"), ("output_tok_per_s", "output tok/s"))
# Llama-3-8B's linear layers as (N, K): fused-free q, k (and v), o, gate (and up), down.
LAYERS = ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336))


def offered(device: str) -> tuple:
    import kpt.hal as hal

    features = hal.device(device).capabilities.features
    return tuple(v for v in VARIANTS if v != "fp8" or "fp8" in features)


def run_variants(device: str) -> dict:
    results = {}
    for variant in offered(device):
        name = variant or "bf16"
        results[name] = measure(device, quantization=variant)
        print(f"{name} done", file=sys.stderr, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next variant's engine starts on a free device
    return results


def table(results: dict) -> None:
    base = results["bf16"]["scenarios"]
    print(f"# {results['bf16']['name']}: quantized variants against bf16 (same run)")
    print("| scenario | measure | " + " | ".join(results) + " | "
          + " | ".join(f"{v} / bf16" for v in results if v != "bf16") + " |")  # fmt: skip
    print("|---" * (2 + 2 * len(results) - 1) + "|")
    for scenario in base:
        for key, label in MEASURES:
            values = [r["scenarios"][scenario][key] for r in results.values()]
            ratios = [v / values[0] for v in values[1:]]
            print(f"| {scenario} | {label} | " + " | ".join(f"{v:,.2f}" for v in values)
                  + " | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")  # fmt: skip


def compare(real_path: str, sim_path: str) -> None:
    real, sim = (json.loads(Path(p).read_text()) for p in (real_path, sim_path))
    print("# quantized variants: simulated / real, per variant and scenario")
    print("| variant | scenario | TPOT sim / real | tok/s sim / real |")
    print("|---|---|---|---|")
    for variant, result in real.items():
        if variant not in sim:
            continue
        for scenario, r in result["scenarios"].items():
            s = sim[variant]["scenarios"][scenario]
            tpot = s["tpot_ms_median"] / r["tpot_ms_median"]
            rate = s["output_tok_per_s"] / r["output_tok_per_s"]
            print(f"| {variant} | {scenario} | {tpot:.3f} | {rate:.3f} |")


def kernels(batches: tuple[int, ...]) -> None:
    """One linear layer per Llama-8B shape and batch, each call timed inside a CUDA graph
    (no host launch cost), four weight copies in turn so that L2 holds none: the Triton int8
    kernel over a grid of tiles (best three), int8 widened for cuBLAS (the path of batches
    over the kernel's MAX_ROWS), fp8 with row-wise and tensor-wise scales, and bf16 (cuBLAS)."""
    device = torch.device("cuda")
    for n, k in LAYERS:
        weights = [torch.randn(n, k, device=device, dtype=torch.bfloat16) for _ in range(4)]
        for rows in batches:
            _layer_times(torch.randn(rows, k, device=device, dtype=torch.bfloat16), weights)


def _layer_times(x: torch.Tensor, weights: list[torch.Tensor]) -> None:
    import itertools

    from kpt.serve._quantize import ActivationQuantizer
    from kpt.serve._triton_quant import int8_linear, int8_widen, tiles_for

    (rows, k), n, device = x.shape, weights[0].shape[0], x.device
    int8 = [torch.randint(-127, 128, (n, k), device=device, dtype=torch.int8) for _ in weights]
    fp8 = [w.to(torch.float8_e4m3fn) for w in weights]
    scale = torch.rand(n, device=device, dtype=torch.bfloat16)
    row_scale, one = torch.rand(1, n, device=device), torch.ones((), device=device)
    xq, x_scale = x.to(torch.float8_e4m3fn), torch.rand(rows, 1, device=device)
    bf16 = torch.bfloat16
    times = {
        "bf16": _graph_us(lambda i: x @ weights[i].t()),
        "fp8 rowwise gemm": _graph_us(lambda i: torch._scaled_mm(
            xq, fp8[i].t(), scale_a=x_scale, scale_b=row_scale, out_dtype=bf16)),
        "fp8 tensorwise gemm": _graph_us(lambda i: torch._scaled_mm(
            xq, fp8[i].t(), scale_a=one, scale_b=one, out_dtype=bf16)),
        "int8 engine tiles": _graph_us(lambda i: int8_linear(x, int8[i], scale)),
        "int8 widened by torch": _graph_us(lambda i: F.linear(x, int8[i].to(bf16)) * scale),
        "int8 widened by triton": _graph_us(
            lambda i: F.linear(x, int8_widen(int8[i], scale, bf16))),
        "fp8 quantize x3": _graph_us(lambda i: ActivationQuantizer()(x, x, fp8[0].dtype)),
        "fp8 quantize fused": _graph_us(
            lambda i: ActivationQuantizer(fused=True)(x, x, fp8[0].dtype)),
    }  # fmt: skip
    if rows <= 64:  # (BLOCK_N, BLOCK_K, num_stages, SPLIT_K); four warps (eight never won)
        block_m = max(16, 1 << (rows - 1).bit_length())
        grid = [
            (block_m, n_tile, k_tile, 4, stages, split)
            for n_tile, k_tile, stages, split in itertools.product(
                (16, 32, 64), (128, 256, 512), (3, 4), (1, 2, 4)
            )
        ]
    else:  # prompt-sized: compute-bound tiles
        grid = [
            (*tile, 1)
            for tile in itertools.product((64, 128), (64, 128), (64, 128), (4, 8), (3, 4))
        ]
    tuned = []
    for tiles in grid:
        try:
            us = _graph_us(lambda i, t=tiles: int8_linear(x, int8[i], scale, t))
        except Exception as exc:  # a tile that needs more shared memory than there is
            print(f"  {tiles}: {type(exc).__name__}", file=sys.stderr)
            continue
        tuned.append((us, tiles))
    tuned.sort()
    print(f"{n} x {k}, rows {rows}: " + ", ".join(
        f"{name} {us:.1f} us" for name, us in times.items()), flush=True)  # fmt: skip
    print(f"    engine tiles: {tiles_for(rows, n, k)}")
    for us, tiles in tuned[:3]:
        print(f"    int8 {tiles}: {us:.1f} us ({us / times['bf16']:.3f} of bf16)")


def _graph_us(call, per_graph: int = 16, replays: int = 20) -> float:
    """Microseconds per call, the calls captured in one CUDA graph and replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(4):
            call(i % 4)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(per_graph):
            call(i % 4)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (per_graph * replays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", help="write the figures here as JSON")
    parser.add_argument("--compare", nargs=2, metavar=("REAL", "SIM"))
    parser.add_argument("--kernels", action="store_true", help="one layer per shape (CUDA)")
    parser.add_argument("--rows", default="1,16,64", help="--kernels: batch sizes, commas")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if args.kernels:
        kernels(tuple(int(r) for r in args.rows.split(",")))
        return
    if args.device.startswith("cuda"):
        from bench_engine_gpu import ensure_cuda_adapter

        ensure_cuda_adapter()
    else:
        import kpt.adapters.sim  # noqa: F401  (the kpt_sim device)
    results = run_variants(args.device)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    table(results)


if __name__ == "__main__":
    main()
