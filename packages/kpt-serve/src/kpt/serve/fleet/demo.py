"""The demo's serving step: one model served from two simulated chips behind the router.

`main(argv) -> dict` starts a fleet of two kpt_sim worker processes, each an embedded simulator
on its own chip profile (h100-sxm and mi300x by default), puts the OpenAI-compatible API in
front of the router, runs a short `kpt-serve bench` against it and prints TTFT and TPOT per
chip. Those come from each worker's engine clock, which on kpt_sim is simulated time: the real
scheduler and router, timed as the simulated chips would run them. The router places requests
by step times on that clock too (step_clock="device"), so the faster chip takes more of them.

Give it a Hugging Face model folder (--model-dir, e.g. a checkpoint saved by training); with
none it writes a tiny random GPT-2-style one first. Needs kpt-serve's `http` and `sim` extras.

    python -m kpt.serve.fleet.demo [--model-dir DIR] [--profiles h100-sxm,mi300x]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kpt.serve.fleet._api import BackgroundHttp, FleetApi
from kpt.serve.fleet._bench import BenchConfig, format_report, run_bench
from kpt.serve.fleet._fleet import Fleet
from kpt.serve.fleet._launcher import WorkerSpec

DEFAULT_PROFILES = "h100-sxm,mi300x"
TINY = {"layers": 2, "width": 64, "heads": 4, "vocab": 256, "positions": 128}


def write_tiny_gpt2(folder: str | Path, seed: int = 0, **sizes: int) -> Path:
    """A random-weight GPT-2-style model folder (config.json + model.safetensors) as
    transformers' GPT2LMHeadModel.save_pretrained writes it, without needing transformers."""
    shape = {**TINY, **sizes}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    width, vocab = shape["width"], shape["vocab"]

    def normal(*dims: int) -> torch.Tensor:
        return torch.randn(*dims, generator=gen) * 0.02

    tensors = {
        "transformer.wte.weight": normal(vocab, width),
        "transformer.wpe.weight": normal(shape["positions"], width),
        "transformer.ln_f.weight": torch.ones(width),
        "transformer.ln_f.bias": torch.zeros(width),
    }
    # Conv1D layouts, as GPT-2 checkpoints store them: (in_features, out_features).
    for i in range(shape["layers"]):
        p = f"transformer.h.{i}."
        tensors |= {
            p + "ln_1.weight": torch.ones(width),
            p + "ln_1.bias": torch.zeros(width),
            p + "attn.c_attn.weight": normal(width, 3 * width),
            p + "attn.c_attn.bias": torch.zeros(3 * width),
            p + "attn.c_proj.weight": normal(width, width),
            p + "attn.c_proj.bias": torch.zeros(width),
            p + "ln_2.weight": torch.ones(width),
            p + "ln_2.bias": torch.zeros(width),
            p + "mlp.c_fc.weight": normal(width, 4 * width),
            p + "mlp.c_fc.bias": torch.zeros(4 * width),
            p + "mlp.c_proj.weight": normal(4 * width, width),
            p + "mlp.c_proj.bias": torch.zeros(width),
        }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": vocab,
        "n_positions": shape["positions"],
        "n_embd": width,
        "n_layer": shape["layers"],
        "n_head": shape["heads"],
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "float32",
        "tie_word_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kpt.serve.fleet.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model-dir", default=None, help="a Hugging Face model folder (default: a tiny random one)"
    )
    parser.add_argument(
        "--profiles",
        default=DEFAULT_PROFILES,
        help=f"kpt_sim chip profiles, one worker each (default {DEFAULT_PROFILES})",
    )
    parser.add_argument(
        "--layers", type=int, default=TINY["layers"], help="the random model's layers"
    )
    parser.add_argument("--width", type=int, default=TINY["width"], help="its hidden size")
    parser.add_argument("--num-prompts", type=int, default=12, help="bench requests (12)")
    parser.add_argument("--input-len", type=int, default=16, help="prompt tokens (16)")
    parser.add_argument("--output-len", type=int, default=8, help="tokens generated (8)")
    parser.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="Poisson arrivals per second; inf (default) sends all at once (Offline)",
    )
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds for the workers to load"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Serve, bench, print; returns {"model_dir", "profiles", "bench", "per_chip", timings}."""
    args = _parse(argv)
    started = time.perf_counter()
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="kpt-serve-demo-") as scratch:
        model_dir = (
            Path(args.model_dir)
            if args.model_dir
            else write_tiny_gpt2(Path(scratch) / "m", layers=args.layers, width=args.width)
        )
        specs = [
            WorkerSpec(
                model="demo",
                model_dir=str(model_dir),
                device="kpt_sim:0",
                profile=profile,
                step_clock="device",
                threads=1,
                num_kv_blocks=64,
                max_num_seqs=16,
            )
            for profile in profiles
        ]
        print(f"serving {model_dir} from {len(specs)} kpt_sim workers: {', '.join(profiles)}")
        with Fleet(specs, policy="predicted") as fleet:
            fleet.wait_ready(timeout=args.ready_timeout)
            ready_s = time.perf_counter() - started
            http = BackgroundHttp(FleetApi(fleet.router, fleet.metrics, fleet.model_dirs).app)
            try:
                bench = run_bench(
                    BenchConfig(
                        url=http.url,
                        model="demo",
                        num_prompts=args.num_prompts,
                        input_len=args.input_len,
                        output_len=args.output_len,
                        request_rate=args.request_rate,
                    )
                )
            finally:
                http.close()
            workers = [w.describe() for w in fleet.router.workers()]
    print(format_report(bench))
    per_chip = {chip: _chip_line(stats) for chip, stats in bench["per_chip"].items()}
    print("\nper chip (simulated time, from each worker's engine clock):")
    print(f"  {'chip':<22}{'requests':>9}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'TPOT p50 ms':>13}")
    for chip, line in per_chip.items():
        print(
            f"  {chip:<22}{line['requests']:>9}{line['ttft_ms_p50']:>13.3f}"
            f"{line['ttft_ms_p99']:>13.3f}{line['tpot_ms_p50']:>13.4f}"
        )
    result = {
        "model_dir": str(args.model_dir or "tiny random GPT-2 (deleted after the run)"),
        "profiles": profiles,
        "per_chip": per_chip,
        "workers": workers,
        "bench": bench,
        "ready_s": ready_s,
        "wall_s": time.perf_counter() - started,
    }
    print(f"\nworkers ready in {ready_s:.1f}s, whole step {result['wall_s']:.1f}s (wall)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


def _chip_line(stats: dict[str, Any]) -> dict[str, float]:
    return {
        "requests": stats["requests"],
        "ttft_ms_p50": stats["device_ttft_ms"]["median"],
        "ttft_ms_p99": stats["device_ttft_ms"]["p99"],
        "tpot_ms_p50": stats["device_tpot_ms"]["median"],
        "tpot_ms_p99": stats["device_tpot_ms"]["p99"],
    }


if __name__ == "__main__":
    main()
