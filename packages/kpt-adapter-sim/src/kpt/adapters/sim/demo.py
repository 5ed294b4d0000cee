"""``python -m kpt.adapters.sim.demo``: train a small GPT-2-style model on a two-chip simulator.

Starts an embedded daemon with an h100-sxm and an mi300x, trains on the first for ``--steps``
steps (loss curve, wall time), times a few steps on every device with kpt_sim events (the
simulator is deterministic, so a few steps give the figure; each device gets its lane in the
trace), replays device 0's recorded step on each profile and on h200 to show where the time goes
(chip busy against host issuing, ``demo_breakdown``), compares the predictions with the steps
measured on a real H100 and H200 (simulator/calibration/: h100_reference_steps_r2.json is the
machine whose host time h100-sxm's host_issue_us was fitted on), and writes a checkpoint, a
Perfetto trace (one lane per device) and a plot into ``--out``. The A/B step (fp32 against bf16
autocast) is in ``demo_precision``.
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

from kpt.adapters.sim.demo_breakdown import breakdown, measured_step, record_steps
from kpt.adapters.sim.demo_plots import plot_training

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


def progress_bar(iterable: Any = None, **options: Any) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is optional
        return _NoBar(iterable)
    return tqdm(iterable, **options)


class _NoBar:
    """What the demo uses of a tqdm bar, doing nothing (tqdm is not installed)."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def trace_lanes(path: str | Path) -> list[str]:
    """The device lanes (Perfetto process tracks) of a Chrome trace the daemon wrote."""
    events = json.loads(Path(path).read_text()).get("traceEvents", [])
    return [
        e["args"]["name"]
        for e in sorted(events, key=lambda e: e.get("pid", 0))
        if e.get("ph") == "M" and e.get("name") == "process_name"
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps on device 0")
    parser.add_argument("--timing-steps", type=int, default=5, help="timed steps per device")
    parser.add_argument("--out", default="kpt-sim-demo")
    args = parser.parse_args(argv)
    os.environ.setdefault("KPT_SIM_PROFILE", PROFILES)
    import kpt.adapters.sim  # noqa: F401
    from kpt.adapters.sim._runtime import runtime

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
    for step in progress_bar(range(args.steps), desc=f"training on {devices[0].get('profile')}"):
        pending.append((step, trainer.step(*trainer.batch(generator))))
        if step % 10 == 0 or step == args.steps - 1:
            losses += [(s, loss.item()) for s, loss in pending]  # one wait per ten steps
            pending.clear()
    wall_ms = (time.perf_counter() - wall) / max(args.steps, 1) * 1e3
    if losses:
        print(f"loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f} over {args.steps} steps, "
              f"wall {wall_ms:.0f} ms/step on this host")  # fmt: skip

    # 2. Simulated step time on every device of the cluster, timed with kpt_sim events, so the
    # trace has one lane per device. Times are deterministic, so a few steps suffice. Device 0's
    # steps are also recorded as an op trace and replayed on each profile (and on h200, the
    # other chip with a real measurement): the replay says where the step's time goes.
    batch = trainer.batch(torch.Generator().manual_seed(1))
    timing_steps = max(args.timing_steps, 1)
    event_ms: dict[str, float] = {}
    ops_path = out / "step_ops.json"
    for info in devices:
        index = int(info["index"])
        timer = trainer if index == 0 else Trainer(torch.device("kpt_sim", index), DEMO_CONFIG)
        inputs = tuple(x.to(timer.device) for x in batch)
        timer.timed_step(*inputs)  # warm: every buffer comes from the cache
        times: list[float] = []

        def timed(timer: Trainer = timer, inputs: tuple = inputs, times: list = times) -> None:
            times.append(timer.timed_step(*inputs)[1])

        if index == 0:
            record_steps(runtime().client, timed, timing_steps, ops_path)
        else:
            for _ in range(timing_steps):
                timed()
        label = f"kpt_sim:{index} {info.get('profile')}"
        event_ms[label] = sorted(times)[len(times) // 2]
        print(f"{label}: simulated step {event_ms[label]:.3f} ms (events on the device)")
    profiles = list(dict.fromkeys(str(info.get("profile")) for info in devices))
    replayed = {name: breakdown(ops_path, name, timing_steps) for name in [*profiles, "h200"]}
    print(f"where the time goes (device 0's step replayed; {ops_path}):")
    for name, row in replayed.items():
        print(
            f"  {name:>9}: step {row.step_ms:.3f} ms, chip busy {row.chip_busy_ms:.3f} ms "
            f"({100 * row.chip_share:.0f}%), {row.launches:.0f} ops issued (one every "
            f"{row.us_per_op:.1f} us): {row.bound}"
        )

    # 3. Prediction against the real GPUs (the calibration runs of this very model).
    for name, row in replayed.items():
        real = measured_step(name, "fp32")
        if real is None:
            continue
        line = (f"{name} predicted {row.step_ms:.3f} ms vs real {real.gpu} step "
                f"{real.step_ms:.3f} ms (ratio {row.step_ms / real.step_ms:.2f})")  # fmt: skip
        if real.gpu_busy_ms:
            line += (
                f"; chip busy {row.chip_busy_ms:.3f} ms vs its GPU-busy time "
                f"{real.gpu_busy_ms:.3f} ms (ratio {row.chip_busy_ms / real.gpu_busy_ms:.2f})"
            )
        print(line)
    if not any(measured_step(name, "fp32") for name in replayed):
        print("no real-GPU reference measurement found (run from the repository): skipping")

    # 4. A checkpoint written on kpt_sim, as on CUDA: torch.save of the state_dict. It loads with
    # torch.load's defaults anywhere (on the CPU too, without kpt: map_location="cpu").
    checkpoint = out / "checkpoint.pt"
    torch.save({"model": trainer.model.state_dict(), "config": DEMO_CONFIG}, checkpoint)
    with torch.no_grad():
        eval_loss = evaluate(trainer.model, DEMO_CONFIG, trainer.device)
    print(f"checkpoint {checkpoint} written on kpt_sim:0 (eval loss there {eval_loss:.6f})")

    trace = runtime().client.dump_trace(out / "trace.json")
    lanes = trace_lanes(trace)
    print(f"Perfetto trace: {trace} (open at https://ui.perfetto.dev), one lane per device: "
          + ", ".join(lanes))  # fmt: skip
    steps = {label: (ms, replayed[label.split(" ", 1)[1]].chip_busy_ms)
             for label, ms in event_ms.items()}  # fmt: skip
    plot = plot_training(out / "loss.png", losses, steps)
    if plot:
        print("plot:", plot)
    print(f"demo wall time {time.perf_counter() - started:.1f} s")
    return {"losses": losses, "simulated_ms": event_ms, "wall_ms_per_step": wall_ms,
            "checkpoint": str(checkpoint), "eval_loss": eval_loss, "trace": trace,
            "trace_lanes": lanes, "replayed": replayed}  # fmt: skip


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


if __name__ == "__main__":
    main()
