"""``python -m kpt.adapters.sim.demo``: train a small GPT-2-style model on a two-chip simulator.

Starts an embedded daemon with an h100-sxm and an mi300x, trains on the first for ``--steps``
steps (loss curve, wall time), times a few steps on every profile (simulated step time: the
simulator is deterministic, so a few steps give the figure), compares the h100-sxm prediction with
the step measured on a real H100 (simulator/calibration/h100_reference_steps_r2.json: the
machine whose host time h100-sxm's host_issue_us was fitted on), and writes a
Perfetto trace and a plot into ``--out``. ``compare_precisions()`` runs fp32 against bf16
autocast as a kpt.abtest Experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

PROFILES = "h100-sxm:1,mi300x:1"
# The model the H100 reference run timed (calibration/reference_steps.py, "demo_gpt");
# tests/test_demo_model.py keeps this copy equal to that one.
DEMO_CONFIG = {"layers": 4, "width": 256, "heads": 4, "vocab": 512, "context": 64, "batch": 8}
GPT2_SMALL = {"layers": 12, "width": 768, "heads": 12, "vocab": 50257, "context": 128, "batch": 4}
# Eager steps are largely host time, which belongs to the machine driving the GPU: compare with
# the run whose host the profile's host_issue_us was fitted on (calibration round 2). The first
# run's faster host took 6.21 ms for the same fp32 step (h100_reference_steps.json).
REFERENCE = Path("simulator") / "calibration" / "h100_reference_steps_r2.json"


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, w // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, w))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """GPT-2 layout (learned positions, pre-norm blocks, tied embedding), as in the H100 run."""

    def __init__(self, layers: int, width: int, heads: int, vocab: int, context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for module in self.modules():  # GPT-2's init: the first loss is near ln(vocab)
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tok.weight.t()


class Trainer:
    """One model and AdamW on one device; ``step()`` is a training step on a batch."""

    def __init__(self, device: Any, config: dict, precision: str = "fp32", seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.config = config
        self.precision = precision
        keys = ("layers", "width", "heads", "vocab", "context")
        self.model = GPT(*(config[k] for k in keys)).to(self.device)
        # foreach=True as CUDA's default: torch only picks it itself for plain Tensor/Parameter
        # types, and a kpt_sim parameter is a SimTensor (the device type check already passes).
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=3e-3, foreach=True)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of a learnable toy language: each token is the previous one plus one."""
        c = self.config
        start = torch.randint(0, c["vocab"], (c["batch"], 1), generator=generator)
        seq = (start + torch.arange(c["context"] + 1)) % c["vocab"]
        return seq[:, :-1].contiguous().to(self.device), seq[:, 1:].contiguous().to(self.device)

    def step(self, idx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        c = self.config
        kind = self.device.type
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(idx)
            loss = F.cross_entropy(logits.float().view(-1, c["vocab"]), tgt.view(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def timed_step(self, idx: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, float]:
        """A step and its SIMULATED milliseconds (kpt_sim events around it)."""
        stream = torch.kpt_sim.current_stream(self.device.index)
        start = torch.kpt_sim.Event(enable_timing=True)
        end = torch.kpt_sim.Event(enable_timing=True)
        start.record(stream)
        loss = self.step(idx, tgt)
        end.record(stream)
        return loss, start.elapsed_time(end)


def reference_steps(model: str = "demo_gpt") -> dict[str, dict]:
    """{precision: run} measured on a real H100 (step_ms_median, kernels_per_step...), or {}."""
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        path = base / REFERENCE
        if path.exists():
            data = json.loads(path.read_text())
            runs = data.get("models", {}).get(model, {}).get("runs", [])
            return {run["precision"]: run for run in runs if "precision" in run}
    return {}


def _tqdm(iterable: Any, **options: Any) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is optional
        return iterable
    return tqdm(iterable, **options)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps on device 0")
    parser.add_argument("--timing-steps", type=int, default=5, help="timed steps per profile")
    parser.add_argument("--out", default="kpt-sim-demo")
    args = parser.parse_args(argv)
    os.environ.setdefault("KPT_SIM_PROFILE", PROFILES)
    import kpt.adapters.sim  # noqa: F401
    from kpt.adapters.sim._runtime import runtime
    from kpt.sim import replay

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    devices = runtime().devices
    for info in devices:
        print("device", {k: info[k] for k in ("index", "profile", "model") if k in info})
    started = time.perf_counter()

    # 1. Train on device 0: the loss curve and the wall time per step.
    trainer = Trainer(torch.device("kpt_sim", 0), DEMO_CONFIG)
    generator = torch.Generator().manual_seed(0)
    losses: list[tuple[int, float]] = []
    pending: list[tuple[int, torch.Tensor]] = []
    wall = time.perf_counter()
    for step in _tqdm(range(args.steps), desc=f"training on {devices[0].get('profile')}"):
        pending.append((step, trainer.step(*trainer.batch(generator))))
        if step % 10 == 0 or step == args.steps - 1:
            losses += [(s, loss.item()) for s, loss in pending]  # one wait per ten steps
            pending.clear()
    wall_ms = (time.perf_counter() - wall) / max(args.steps, 1) * 1e3
    if losses:
        print(f"loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f} over {args.steps} steps, "
              f"wall {wall_ms:.0f} ms/step on this host")  # fmt: skip

    # 2. Simulated step time per profile. Times are deterministic, so a few steps suffice: they
    # are timed with events on device 0, recorded as an op trace, and that trace is replayed on
    # every profile of the cluster (one recorded step serves every chip, cheaper than training
    # a second model on each).
    batch = trainer.batch(torch.Generator().manual_seed(1))
    trainer.timed_step(*batch)  # warm: every buffer comes from the cache
    client = runtime().client
    client.record_ops(True)
    event_ms = [trainer.timed_step(*batch)[1] for _ in range(args.timing_steps)]
    ops_path = client.dump_ops(out / "step_ops.json")
    client.record_ops(False)
    print(f"{devices[0].get('profile')} (device 0, events): simulated step "
          f"{sorted(event_ms)[len(event_ms) // 2]:.3f} ms")  # fmt: skip
    simulated: dict[str, float] = {}
    chip_busy: dict[str, float] = {}
    for name in dict.fromkeys(str(info.get("profile")) for info in devices):
        summary = replay(ops_path, profile=name)
        steps = max(args.timing_steps, 1)
        simulated[name] = summary["predicted_s"] * 1e3 / steps
        chip_busy[name] = sum(row["busy_s"] for row in summary["devices"]) * 1e3 / steps
        # A small eager model is host-bound on any chip: the chip's own time tells them apart.
        print(
            f"{name} (replayed): simulated step {simulated[name]:.3f} ms, "
            f"chip busy {chip_busy[name]:.3f} ms of it"
        )

    # 3. Prediction against the real H100.
    reference = reference_steps("demo_gpt").get("fp32")
    measured_bars: dict[str, float] = {}
    if reference and "h100-sxm" in simulated:
        measured = measured_bars["real H100 step"] = reference["step_ms_median"]
        busy = (reference.get("kernels_per_step") or {}).get("device_seconds")
        if busy:
            measured_bars["real H100 GPU-busy"] = busy * 1e3
        line = (f"h100-sxm predicted {simulated['h100-sxm']:.3f} ms vs real H100 step "
                f"{measured:.3f} ms (ratio {simulated['h100-sxm'] / measured:.2f})")  # fmt: skip
        if busy:
            line += (
                f"; chip busy {chip_busy['h100-sxm']:.3f} ms vs its GPU-busy time "
                f"{busy * 1e3:.3f} ms (ratio {chip_busy['h100-sxm'] / (busy * 1e3):.2f})"
            )
        print(line)
    else:
        print("no H100 reference measurement found: skipping the comparison")

    # 4. A checkpoint written on kpt_sim, as on CUDA: torch.save of the state_dict. It loads with
    # torch.load's defaults anywhere (on the CPU too, without kpt: map_location="cpu").
    checkpoint = out / "checkpoint.pt"
    torch.save({"model": trainer.model.state_dict(), "config": DEMO_CONFIG}, checkpoint)
    with torch.no_grad():
        eval_loss = evaluate(trainer.model, DEMO_CONFIG, trainer.device)
    print(f"checkpoint {checkpoint} written on kpt_sim:0 (eval loss there {eval_loss:.6f})")

    trace = runtime().client.dump_trace(out / "trace.json")
    print("Perfetto trace:", trace, "(open at https://ui.perfetto.dev)")
    _plot(out / "loss.png", losses, simulated, measured_bars)
    print(f"demo wall time {time.perf_counter() - started:.1f} s")
    return {"losses": losses, "simulated_ms": simulated, "wall_ms_per_step": wall_ms,
            "checkpoint": str(checkpoint), "eval_loss": eval_loss}  # fmt: skip


def evaluate(model: nn.Module, config: dict, device: Any) -> float:
    """The loss on a fixed batch (seed 7): the same number on any device holding the weights."""
    probe = Trainer.__new__(Trainer)
    probe.config, probe.device = config, torch.device(device)
    idx, tgt = probe.batch(torch.Generator().manual_seed(7))
    logits = model(idx)
    return F.cross_entropy(logits.float().view(-1, config["vocab"]), tgt.view(-1)).item()


def load_on_cpu(path: str | Path) -> nn.Module:
    """The demo model from a checkpoint saved on kpt_sim, on the CPU (torch.load defaults)."""
    saved = torch.load(path, map_location="cpu")
    config = saved["config"]
    model = GPT(*(config[k] for k in ("layers", "width", "heads", "vocab", "context")))
    model.load_state_dict(saved["model"])
    return model


def _plot(path: Path, losses: list, simulated: dict, measured: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if losses:
        left.plot(*zip(*losses))
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    right.bar(list(simulated), list(simulated.values()), label="simulated")
    right.bar(list(measured), list(measured.values()), label="measured (calibration run)")
    right.legend()
    right.tick_params(axis="x", labelrotation=15)
    right.set_ylabel("simulated step time (ms)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print("plot:", path)


def compare_precisions(steps: int = 40, device: Any = "kpt_sim:0") -> Any:
    """fp32 against bf16 autocast on kpt_sim, as a kpt.abtest Experiment; prints the verdict.

    Simulated time is deterministic (no run-to-run variance), so the tested metric is the
    per-batch training loss (it varies with the batch); the simulated step times are reported
    beside it as exact figures.
    """
    import kpt.abtest as ab
    import kpt.adapters.sim  # noqa: F401

    arms = {name: Trainer(device, DEMO_CONFIG, precision=name) for name in ("fp32", "bf16")}
    generators = {name: torch.Generator().manual_seed(2) for name in arms}
    sim_ms: dict[str, list[float]] = {name: [] for name in arms}

    def trial(name: str) -> dict:
        trainer = arms[name]
        loss, ms = trainer.timed_step(*trainer.batch(generators[name]))
        sim_ms[name].append(ms)
        return {"loss": loss.item(), "sim_ms": ms}

    experiment = ab.Experiment(
        {name: (lambda n=name: trial(n)) for name in arms},
        metric="loss",
        warmup=2,
        max_trials=max(2, steps),
        min_trials=min(10, steps),
        sequential=False,
    )
    result = experiment.run()
    print(result.summary())
    fp32, bf16 = (sorted(sim_ms[n])[len(sim_ms[n]) // 2] for n in ("fp32", "bf16"))
    print(f"simulated step (deterministic, no variance to test): fp32 {fp32:.3f} ms, "
          f"bf16 autocast {bf16:.3f} ms ({(bf16 / fp32 - 1) * 100:+.1f}%)")  # fmt: skip
    for name in arms:
        losses = result.samples[name]["loss"]
        print(f"{name}: final loss {losses[-1]:.3f} after {len(losses)} measured steps")
    return result


if __name__ == "__main__":
    main()
