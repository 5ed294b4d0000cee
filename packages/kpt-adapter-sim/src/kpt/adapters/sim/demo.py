"""``python -m kpt.adapters.sim.demo``: train a small GPT-2-style model on a two-chip simulator.

Starts an embedded daemon with an h100-sxm and an mi300x, trains on each for ``--steps`` steps,
prints the loss curve, simulated and wall step times, compares the h100 prediction with the real
H100 measurement (simulator/calibration/h100_reference_steps.json when present), and writes a
Perfetto trace and a plot into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab: int, width: int, layers: int, context: int, heads: int = 4) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def _reference_step() -> float | None:
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        path = base / "simulator" / "calibration" / "h100_reference_steps.json"
        if path.exists():
            data = json.loads(path.read_text())
            for entry in data if isinstance(data, list) else data.get("steps", [data]):
                if isinstance(entry, dict) and "demo" in str(entry.get("name", "")):
                    return float(entry.get("step_ms") or entry.get("median_ms") or 0) or None
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)  # slow today: see README
    parser.add_argument("--out", default="kpt-sim-demo")
    args = parser.parse_args(argv)
    os.environ.setdefault("KPT_SIM_PROFILE", "h100-sxm:1,mi300x:1")
    import kpt.adapters.sim  # noqa: F401
    from kpt.adapters.sim._runtime import runtime

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for info in runtime().devices:
        print("device", {k: info[k] for k in sorted(info) if k in ("index", "profile", "model")})
    data = torch.randint(0, 512, (64, 65))
    results = {}
    for index, info in enumerate(runtime().devices):
        torch.manual_seed(0)
        device = torch.device("kpt_sim", index)
        model = GPT(512, 256, 4, 64).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses, sim_ms = [], []
        wall = time.perf_counter()
        try:
            from tqdm import tqdm
        except ImportError:  # the progress bar is optional

            def tqdm(x, **_):
                return x

        for step in tqdm(range(args.steps), desc=str(info.get("profile", index))):
            batch = data[torch.randint(0, 64, (8,))].to(device)
            start = torch.kpt_sim.Event(enable_timing=True)
            end = torch.kpt_sim.Event(enable_timing=True)
            start.record(torch.kpt_sim.current_stream(index))
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 512), batch[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            end.record(torch.kpt_sim.current_stream(index))
            if step % 10 == 0 or step == args.steps - 1:
                losses.append((step, loss.item()))
                sim_ms.append(start.elapsed_time(end))
        wall = (time.perf_counter() - wall) / args.steps
        step_ms = sorted(sim_ms)[len(sim_ms) // 2]
        results[info.get("profile", str(index))] = (losses, step_ms, wall)
        print(f"{info.get('profile')}: loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}, "
              f"simulated step {step_ms:.3f} ms, wall {wall * 1e3:.1f} ms/step")  # fmt: skip
    reference = _reference_step()
    if reference and "h100-sxm" in results:
        ratio = results["h100-sxm"][1] / reference
        print(f"h100-sxm predicted / measured H100 step: {ratio:.2f}")
    trace = runtime().client.dump_trace(out / "trace.json")
    print("Perfetto trace:", trace)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        for name, (losses, _, _) in results.items():
            ax.plot(*zip(*losses), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        fig.savefig(out / "loss.png")
        print("plot:", out / "loss.png")
    except ImportError:
        print("matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
