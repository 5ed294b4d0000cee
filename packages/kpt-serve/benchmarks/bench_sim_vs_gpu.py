"""kpt-serve on a real GPU against kpt-serve on a simulated chip: the same engine, the same
workloads, a model of Llama-3-8B's shape with random weights (load_format "dummy"), bf16.

Each scenario's requests all arrive at once; the engine's clock times them (wall time on a real
device; on kpt_sim, the chip's simulated time plus the host time the engine spent here):

    python benchmarks/bench_sim_vs_gpu.py --device cuda --out gpu.json          # on the GPU
    KPT_SIM_PROFILE=h200 KPT_SIM_NUMERICS=0 \\
        python benchmarks/bench_sim_vs_gpu.py --device kpt_sim --out sim.json    # anywhere
    python benchmarks/bench_sim_vs_gpu.py --compare gpu.json sim.json            # the table

On kpt_sim the engine times each forward as the CUDA graph replay the GPU runs, and gives its
own host time to the simulated host; --eager-timing times every launch as an eager one (the
engine with cuda_graphs=False), for comparison.

KPT_SIM_NUMERICS=0 runs the simulated chip timing-only: 16 GB of weights cost no host memory.
Greedy tokens then differ between the two runs (random weights, no values), so every request
ignores EOS and produces exactly its max_tokens: the work is the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kpt.serve import LLM, SamplingParams

LLAMA_8B = {  # Llama-3-8B's config.json, less what the engine does not read
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "tie_word_embeddings": False,
}

# (name, requests, prompt tokens, output tokens)
SCENARIOS = (
    ("batch 1", 1, 128, 128),
    ("batch 16", 16, 512, 128),
    ("batch 64", 64, 512, 128),
)


def run_scenario(llm: LLM, requests: int, prompt: int, output: int, seed: int) -> dict:
    engine = llm.engine
    params = SamplingParams(max_tokens=output, temperature=0.0, ignore_eos=True)
    # Distinct prompts: nothing is served from the prefix cache.
    vocab = engine.model_config.vocab_size
    prompts = [[(seed * 7919 + r * 131 + i) % (vocab - 1) + 1 for i in range(prompt)]
               for r in range(requests)]  # fmt: skip
    start_ms = engine.clock.now_ms()
    wall = time.perf_counter()
    outs = llm.generate(prompts, params)
    wall = time.perf_counter() - wall
    end_ms = engine.clock.now_ms()
    tpot = [(o.latency_ms - o.ttft_ms) / (len(o.token_ids) - 1) for o in outs]
    return {
        "requests": requests,
        "prompt": prompt,
        "output": output,
        "duration_ms": end_ms - start_ms,
        "output_tok_per_s": requests * output / ((end_ms - start_ms) / 1e3),
        "ttft_ms_median": statistics.median(o.ttft_ms for o in outs),
        "tpot_ms_median": statistics.median(tpot),
        "wall_s": wall,
    }


def measure(device: str, eager_timing: bool = False, quantization: str | None = None) -> dict:
    folder = Path(tempfile.mkdtemp()) / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    if device.startswith("cuda"):
        from bench_engine_gpu import ensure_cuda_adapter

        ensure_cuda_adapter()
    else:
        import kpt.adapters.sim  # noqa: F401  (the kpt_sim device)
    llm = LLM(
        folder,
        device=device,
        dtype=torch.bfloat16,
        load_format="dummy",
        max_num_seqs=64,
        num_kv_blocks=4096,  # 65,536 tokens: every scenario fits without preemption
        max_model_len=2048,
        quantization=quantization,
        **({"cuda_graphs": False} if eager_timing else {}),
    )
    results = {}
    for name, requests, prompt, output in SCENARIOS:
        # Once to warm up (on CUDA the first use of a batch shape captures its graph and
        # compiles its kernels), then measured, on prompts the prefix cache has not seen.
        run_scenario(llm, requests, prompt, output, seed=100 + len(results))
        results[name] = run_scenario(llm, requests, prompt, output, seed=len(results))
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    module = getattr(torch, llm.engine.device.type)
    return {
        "device": device,
        "name": module.get_device_name(),
        "torch": torch.__version__,
        "model": "Llama-3-8B shape, random weights, bf16",
        "quantization": quantization,
        "eager_timing": eager_timing,
        "scenarios": results,
    }


def compare(real_path: str, sim_path: str) -> None:
    real, sim = (json.loads(Path(p).read_text()) for p in (real_path, sim_path))
    print(f"# kpt-serve, {real['model']}: {real['name']} against {sim['name']}")
    print("| scenario | measure | real | simulated | simulated / real |")
    print("|---|---|---|---|---|")
    for name, r in real["scenarios"].items():
        s = sim["scenarios"][name]
        for key, label in (
            ("tpot_ms_median", "TPOT median ms"),
            ("ttft_ms_median", "TTFT median ms"),
            ("output_tok_per_s", "output tok/s"),
        ):
            print(f"| {name} | {label} | {r[key]:,.2f} | {s[key]:,.2f} | {s[key] / r[key]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", help="write the figures here as JSON")
    parser.add_argument("--compare", nargs=2, metavar=("REAL", "SIM"))
    parser.add_argument(
        "--eager-timing", action="store_true", help="launches timed eagerly (cuda_graphs=False)"
    )
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    result = measure(args.device, args.eager_timing)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
