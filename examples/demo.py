"""kpt's main job, run by README's first command (`python3 -m nox -s demo`).

1. `kpt devices`: what kpt-hal finds on this machine, the simulated devices included.
2. Train a small GPT-2-style model on `kpt_sim` on a two-profile simulated cluster
   (h100-sxm and mi300x), reporting loss, wall time, the simulated step time on each device,
   where that time goes (chip busy against host issuing), the prediction against the steps
   measured on a real H100 and H200, a Perfetto trace with one lane per device, and a plot.
3. Load the checkpoint saved on kpt_sim on the CPU: the same eval loss.
4. Compare two configurations of that model (fp32 against bf16 autocast) on kpt_sim with a
   kpt.abtest Experiment (metric: the per-batch training loss), with a progress bar, and print
   the verdict with its interval.
5. Explain the bf16 result from the simulator's own breakdown (chip time against host issuing)
   and plot simulated chip-busy time beside the GPU-busy time measured on the real GPUs.
6. Data-parallel training over kpt-collectives on two processes, one h100-sxm and one mi300x,
   with the batch split by each chip's speed: each chip's simulated step and the efficiency.
7. Serve the model trained in step 2 from two simulated workers (h100-sxm and mi300x) behind
   kpt-serve's router, run a short `kpt-serve bench`, and print TTFT and TPOT per chip.

Each step says plainly when the package it needs is not installed, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# The simulated cluster: what `kpt devices` lists and the training uses (as demo.PROFILES).
CLUSTER = "h100-sxm:1,mi300x:1"


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)), flush=True)


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def list_devices() -> None:
    _banner("kpt devices")
    if _have("kpt.adapters.sim"):  # the simulated cluster the training step uses
        os.environ.setdefault("KPT_SIM_PROFILE", CLUSTER)
    if not _have("kpt.hal"):
        print("kpt-hal is not installed: skipping device discovery")
        return
    subprocess.run([sys.executable, "-m", "kpt.hal", "devices"], check=True)


def train_on_simulator(out: Path, steps: int) -> dict | None:
    _banner("training a GPT-2-style model on kpt_sim")
    if not _have("kpt.adapters.sim"):
        print("kpt-adapter-sim is not installed: the simulated device is not available")
        return
    from kpt.adapters.sim import demo

    result = demo.main(["--out", str(out), "--steps", str(steps)])
    load_checkpoint_on_cpu(result)
    return result


def load_checkpoint_on_cpu(result: dict) -> None:
    """The checkpoint the training saved on kpt_sim, loaded on the CPU: the same eval loss."""
    import torch

    from kpt.adapters.sim import demo

    _banner("the checkpoint saved on kpt_sim, loaded on the CPU")
    model = demo.load_on_cpu(result["checkpoint"])
    with torch.no_grad():
        cpu_loss = demo.evaluate(model, demo.DEMO_CONFIG, "cpu")
    print(f"eval loss on kpt_sim {result['eval_loss']:.6f}, on the CPU from the checkpoint "
          f"{cpu_loss:.6f} (difference {abs(cpu_loss - result['eval_loss']):.2e})")  # fmt: skip


def compare_configurations(steps: int) -> dict | None:
    """The A/B experiment; returns its arms (trained models) for the explanation step."""
    _banner("A/B: fp32 against bf16 autocast on kpt_sim")
    if not (_have("kpt.abtest") and _have("kpt.adapters.sim")):
        print("kpt-abtest or kpt-adapter-sim is not installed: skipping the experiment")
        return None
    from kpt.adapters.sim import demo_precision

    arms = demo_precision.precision_arms("kpt_sim:0")
    demo_precision.compare_precisions(steps=steps, arms=arms)
    return arms


def explain_precision_result(arms: dict | None, out: Path) -> None:
    """Why bf16 autocast is slower or faster here, from the simulator's breakdown."""
    _banner("why: the simulator's breakdown of an fp32 and a bf16 step")
    if arms is None:
        print("the A/B step did not run: nothing to explain")
        return
    from kpt.adapters.sim import demo_precision

    demo_precision.explain_precisions(arms, out)


def data_parallel_on_two_chips() -> None:
    _banner("data-parallel training on h100-sxm + mi300x (kpt-collectives)")
    if not (_have("kpt.collectives") and _have("kpt.adapters.sim")):
        print("kpt-collectives or kpt-adapter-sim is not installed: skipping data parallelism")
        return
    from kpt.collectives import demo

    demo.main([])


def serve_trained_model(result: dict | None, out: Path) -> None:
    _banner("serving the trained model from two simulated chips (kpt-serve)")
    if not (_have("kpt.serve.fleet") and _have("kpt.adapters.sim")):
        print("kpt-serve (with its demo extra) is not installed: skipping serving")
        return
    from kpt.serve.fleet import demo

    argv = []
    if result is not None:
        folder = export_gpt2_folder(Path(result["checkpoint"]), out / "served-model")
        print(f"the checkpoint from step 2, as a Hugging Face GPT-2 folder: {folder}")
        argv = ["--model-dir", str(folder)]
    demo.main(argv)


def export_gpt2_folder(checkpoint: Path, folder: Path) -> Path:
    """The demo's GPT (trained on kpt_sim) as a Hugging Face GPT-2 folder that kpt-serve loads:
    the same tensors under GPT-2's names, Linear weights transposed to GPT-2's Conv1D layout."""
    import torch
    from safetensors.torch import save_file

    saved = torch.load(checkpoint, map_location="cpu")
    state, config = saved["model"], saved["config"]
    tensors = {"transformer.wte.weight": state["tok.weight"],
               "transformer.wpe.weight": state["pos.weight"],
               "transformer.ln_f.weight": state["ln_f.weight"],
               "transformer.ln_f.bias": state["ln_f.bias"]}  # fmt: skip
    names = {"ln1": "ln_1", "ln2": "ln_2", "qkv": "attn.c_attn", "proj": "attn.c_proj",
             "fc": "mlp.c_fc", "out": "mlp.c_proj"}  # fmt: skip
    for i in range(config["layers"]):
        for mine, theirs in names.items():
            weight, bias = state[f"blocks.{i}.{mine}.weight"], state[f"blocks.{i}.{mine}.bias"]
            conv1d = mine not in ("ln1", "ln2")
            tensors[f"transformer.h.{i}.{theirs}.weight"] = weight.t() if conv1d else weight
            tensors[f"transformer.h.{i}.{theirs}.bias"] = bias
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config["vocab"], "n_positions": config["context"],
        "n_embd": config["width"], "n_layer": config["layers"], "n_head": config["heads"],
        "activation_function": "gelu",  # the demo's MLP trains with torch's exact GELU
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "torch_dtype": "float32",
        "bos_token_id": 0, "eos_token_id": config["vocab"] - 1,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="trace and plot folder")
    parser.add_argument(
        "--steps", type=int, default=200, help="training steps (the loss settles by ~180)"
    )
    parser.add_argument("--ab-steps", type=int, default=40, help="measured steps per arm")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    list_devices()
    trained = train_on_simulator(args.out, args.steps)
    arms = compare_configurations(args.ab_steps)
    explain_precision_result(arms, args.out)
    data_parallel_on_two_chips()
    serve_trained_model(trained, args.out)
    _banner(f"done in {time.perf_counter() - started:.1f} s of wall time; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
