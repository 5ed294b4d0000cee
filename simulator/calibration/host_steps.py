"""Host time inside training: small, host-bound training steps timed on the GPU.

For each model (an MLP, a small CNN, the demo GPT, GPT-2 small as the device-bound contrast)
and optimizer (AdamW foreach / per-tensor, SGD with momentum foreach / per-tensor) it records
the wall step time, the forward / backward / optimizer phase times, the kernels per step and
per phase with their device durations in issue order (torch.profiler), and the aten ops per
step and per phase (a TorchDispatchMode, views counted apart). host_fit.py fits a host time per
launch on one model and predicts the others. torch only; no kpt imports.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import Counter

import torch
import torch.nn.functional as F
from reference_steps import GPT, REFERENCE_MODELS
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


class MLP(nn.Module):
    def __init__(self, width: int = 512, depth: int = 4, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Linear(width, classes))

    def forward(self, x):
        return self.body(x)


class SmallCNN(nn.Module):
    """CIFAR-sized: three conv-BN-ReLU stages, pooling, a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        chans = [3, 32, 64, 128]
        stages: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            stages += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.MaxPool2d(2)]  # fmt: skip
        self.body = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(chans[-1], classes))  # fmt: skip

    def forward(self, x):
        return self.body(x)


def build(model: str, dev: str, smoke: bool):
    """(module, inputs, targets, loss function) for one reference model."""
    torch.manual_seed(0)
    if model == "mlp":
        width, batch = (32, 4) if smoke else (512, 64)
        net = MLP(width)
        x, y = torch.randn(batch, width), torch.randint(0, 10, (batch,))
        return net.to(dev), x.to(dev), y.to(dev), F.cross_entropy
    if model == "cnn":
        batch, hw = (2, 8) if smoke else (32, 32)
        x, y = torch.randn(batch, 3, hw, hw), torch.randint(0, 10, (batch,))
        return SmallCNN().to(dev), x.to(dev), y.to(dev), F.cross_entropy
    cfg = REFERENCE_MODELS[model]
    if smoke:
        cfg = {**cfg, "layers": 1, "width": 32, "heads": 2, "vocab": 64, "context": 8}
    net = GPT(cfg["layers"], cfg["width"], cfg["heads"], cfg["vocab"], cfg["context"])
    x = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]))
    y = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]))

    def loss_fn(logits, tgt):
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.view(-1))

    return net.to(dev), x.to(dev), y.to(dev), loss_fn


def make_optimizer(name: str, params):
    if name == "adamw_foreach":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if name == "adamw_per_tensor":
        return torch.optim.AdamW(params, lr=1e-4, foreach=False)
    if name == "sgd_foreach":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)
    if name == "sgd_per_tensor":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=False)
    raise ValueError(f"optimizer {name!r} unknown; use adamw_foreach, adamw_per_tensor, ...")


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that reach the dispatcher below autograd (what a backend sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        if getattr(func, "is_view", False):
            self.views += 1
        return func(*args, **(kwargs or {}))


def time_host_step(dev: str, model: str, optimizer: str, steps: int, smoke: bool) -> dict:
    net, x, y, loss_fn = build(model, dev, smoke)
    opt = make_optimizer(optimizer, net.parameters())
    cuda = dev.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def forward():
        return loss_fn(net(x), y)

    def backward(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()

    def step():
        backward(forward())
        opt.step()

    for _ in range(5):
        step()
    walls = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        walls.append(time.perf_counter() - t0)
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        loss = forward()
        sync()
        t1 = time.perf_counter()
        backward(loss)
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        t3 = time.perf_counter()
        for samples, seconds in zip(phases.values(), (t1 - t0, t2 - t1, t3 - t2)):
            samples.append(seconds)
    walls.sort()
    res = {
        "model": model,
        "optimizer": optimizer,
        "params": sum(p.numel() for p in net.parameters()),
        "param_tensors": sum(1 for _ in net.parameters()),
        "step_ms_median": 1e3 * statistics.median(walls),
        "step_ms_min": 1e3 * walls[0],
        "step_ms_p90": 1e3 * walls[int(0.9 * len(walls))],
        "steps_timed": steps,
        "phase_ms_median": {k: 1e3 * statistics.median(v) for k, v in phases.items()},
        "aten_ops": count_ops(forward, backward, opt),
    }
    if cuda:
        res["kernels"] = profile_kernels(forward, backward, opt, sync)
    return res


def count_ops(forward, backward, opt) -> dict:
    out = {}
    counters = {}
    with OpCounter() as c:
        loss = forward()
    counters["forward"] = c
    with OpCounter() as c:
        backward(loss)
    counters["backward"] = c
    with OpCounter() as c:
        opt.step()
    counters["optimizer"] = c
    for phase, c in counters.items():
        out[phase] = {"ops": sum(c.ops.values()), "views": c.views, "by_op": dict(c.ops)}
    out["step"] = sum(v["ops"] for v in out.values())
    return out


def profile_kernels(forward, backward, opt, sync) -> dict:
    """Kernels per phase with their device durations in issue order (each phase profiled)."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    loss = None
    for phase in ("forward", "backward", "optimizer"):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            if phase == "forward":
                loss = forward()
            elif phase == "backward":
                backward(loss)
            else:
                opt.step()
            sync()
        evs = sorted((e for e in prof.events() if e.device_type.name == "CUDA"),
                     key=lambda e: e.time_range.start)  # fmt: skip
        starts = [e.time_range.start for e in evs]
        out[phase] = {
            "count": len(evs),
            "device_seconds": sum(e.time_range.elapsed_us() for e in evs) / 1e6,
            "durations_us": [round(e.time_range.elapsed_us(), 3) for e in evs],
            "starts_us": [round(s - starts[0], 3) for s in starts],
            "names": dict(Counter(e.name[:60] for e in evs).most_common(12)),
        }
    out["count"] = sum(out[p]["count"] for p in ("forward", "backward", "optimizer"))
    out["device_seconds"] = sum(
        out[p]["device_seconds"] for p in ("forward", "backward", "optimizer")
    )
    return out


HOST_STEP_RUNS = [
    (model, optimizer)
    for model in ("mlp", "cnn", "demo_gpt")
    for optimizer in ("adamw_foreach", "adamw_per_tensor", "sgd_foreach", "sgd_per_tensor")
] + [("gpt2_small", "adamw_foreach")]


def measure_host_steps(dev: str, smoke: bool) -> list[dict]:
    out = []
    for model, optimizer in HOST_STEP_RUNS:
        try:
            out.append(time_host_step(dev, model, optimizer, 3 if smoke else 20, smoke))
        except Exception as exc:  # keep the other runs
            out.append({"model": model, "optimizer": optimizer, "error": repr(exc)[:300]})
        r = out[-1]
        print(
            model,
            optimizer,
            round(r.get("step_ms_median", -1), 3),
            r.get("kernels", {}).get("count"),
            r.get("aten_ops", {}).get("step"),
            flush=True,
        )
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
    return out
