"""tune_ddp: DDP's bucket size and gradient compression, chosen from the cost of the real links.

DDP all-reduces gradients bucket by bucket as backward produces them, one bucket after another,
behind the rest of backward. Small buckets hide more of the sync and pay more latency; large
ones pay less latency and wait longer for their last gradient. Compression trades exactness for
bytes: bf16 halves them (`bf16_hook`); PowerSGD (torch's powerSGD_hook) sends
r(m + n) numbers for an m x n gradient, for the price of its matmuls and two all-reduces per
bucket.

`tune_ddp` measures the group's all-reduce at two sizes (latency and bytes/s, as nccl-tests
would, with device events on kpt_sim and cuda) and the device's matmul rate, then simulates one
step's gradient sync for every candidate and keeps the fastest. A lossy compression wins only
when it makes the predicted step at least `min_gain` faster than the best exact choice, so on
fast links the answer is exact DDP.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

BUCKET_CAPS_MB = (1.0, 5.0, 25.0, 100.0)  # 25: DDP's default
COMPRESSIONS = ("none", "bf16", "powersgd")
# PowerSGD's hook issues its next all-reduces from the completion callbacks of the previous
# ones and waits on them there: fine where a Work completes at the post (kpt_sim, nccl), a
# deadlock on gloo's own Work ("Resource deadlock avoided"); so it is a candidate only when
# asked for.
DEFAULT_COMPRESSIONS = ("none", "bf16")
POWERSGD_RANK = 4
POWERSGD_START_ITER = 2  # plain all-reduce before (torch's minimum with error feedback)
_PROBE_BYTES = (1 << 16, 1 << 24)
_PROBE_ITERS = 3


@dataclass(frozen=True)
class LinkCost:
    """One all-reduce on the group: latency + bytes / bandwidth (seconds, bytes/s)."""

    latency_s: float
    bytes_per_s: float

    def all_reduce_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bytes_per_s


@dataclass(frozen=True)
class DdpChoice:
    """A bucket size and a compression, with the predicted time they add to a step."""

    bucket_cap_mb: float
    compression: str  # none | bf16 | powersgd
    predicted_s: float  # sync left exposed after backward, plus compression's compute
    candidates: tuple[tuple[float, str, float], ...] = field(default=(), compare=False)

    def wrap(self, model: torch.nn.Module, group: dist.ProcessGroup | None = None, **ddp_args):
        """`model` in DistributedDataParallel with this bucket size and compression hook."""
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, process_group=group, bucket_cap_mb=self.bucket_cap_mb, **ddp_args
        )
        if self.compression == "bf16":
            ddp.register_comm_hook(group, bf16_hook)
        elif self.compression == "powersgd":
            state = powerSGD_hook.PowerSGDState(
                process_group=group, matrix_approximation_rank=POWERSGD_RANK,
                start_powerSGD_iter=POWERSGD_START_ITER,
            )  # fmt: skip
            ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        return ddp

    def table(self) -> str:
        lines = [f"{'bucket MB':>9}  {'compression':<11}  {'predicted ms':>12}"]
        for cap, compression, seconds in sorted(self.candidates, key=lambda c: c[2]):
            chosen = (cap, compression) == (self.bucket_cap_mb, self.compression)
            mark = "  <- chosen" if chosen else ""
            lines.append(f"{cap:>9g}  {compression:<11}  {seconds * 1e3:>12.3f}{mark}")
        return "\n".join(lines)


def tune_ddp(
    model: torch.nn.Module,
    group: dist.ProcessGroup | None = None,
    *,
    backward_s: float = 0.0,
    min_gain: float = 0.1,
    link: LinkCost | None = None,
    matmul_flops: float | None = None,
    compressions: Sequence[str] = DEFAULT_COMPRESSIONS,
) -> DdpChoice:
    """Pick DDP's bucket size and compression for `model` on `group` (every rank calls it and
    gets the same answer: what each measured, and its `backward_s`, are agreed on, the slowest
    rank's). `backward_s`: one backward's compute time, which the sync can hide behind (0: none
    is hidden). Given `link` and `matmul_flops`, nothing is measured nor agreed (tests, what-if
    questions). `compressions`: among COMPRESSIONS; "none" is always one."""
    unknown = set(compressions) - set(COMPRESSIONS)
    if unknown:
        raise ValueError(f"compressions {sorted(unknown)}: choose among {COMPRESSIONS}")
    if link is None or matmul_flops is None:
        device = next(model.parameters()).device
        link, matmul_flops, backward_s = _agreed(
            group, device, link or measure_link(group, device),
            matmul_flops or measure_matmul_flops(device), backward_s,
        )  # fmt: skip
    shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    element = next(model.parameters()).element_size()
    candidates = []
    for cap in BUCKET_CAPS_MB:
        buckets = _buckets(shapes, element, cap)
        for compression in dict.fromkeys(("none", *compressions)):
            seconds = sync_seconds(buckets, element, compression, link, matmul_flops, backward_s)
            candidates.append((cap, compression, seconds))
    exact = min((c for c in candidates if c[1] == "none"), key=lambda c: c[2])
    best = min(candidates, key=lambda c: c[2])
    if best[1] != "none" and (exact[2] - best[2]) < min_gain * (exact[2] + backward_s):
        best = exact  # not worth the rounding or the low-rank error
    return DdpChoice(best[0], best[1], best[2], tuple(candidates))


def bf16_hook(group, bucket):  # DDP checks these annotations: none, or its own
    """DDP's gradients sent in bf16, on any backend (torch's bf16_compress_hook takes NCCL or
    XCCL only): cast, all-reduce the mean, cast back into the bucket."""
    group = group or dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(group.size())
    future = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(done):
        buffer.copy_(done.value()[0])
        return buffer

    return future.then(decompress)


def sync_seconds(
    buckets: Sequence[Sequence[tuple[int, ...]]],
    element: int,
    compression: str,
    link: LinkCost,
    matmul_flops: float,
    backward_s: float,
) -> float:
    """Exposed sync of one step: buckets become ready evenly through backward (DDP fills them
    in reverse order of the parameters) and are all-reduced one after another."""
    done = 0.0
    for index, shapes in enumerate(buckets):
        ready = backward_s * (index + 1) / len(buckets)
        done = max(done, ready) + _bucket_seconds(shapes, element, compression, link, matmul_flops)
    return max(done - backward_s, 0.0)


def _bucket_seconds(shapes, element, compression, link, matmul_flops) -> float:
    numel = sum(math.prod(s) for s in shapes)
    if compression == "none":
        return link.all_reduce_s(numel * element)
    if compression == "bf16":
        return link.all_reduce_s(numel * 2)
    # PowerSGD, as torch's hook does it: vectors and matrices too small to gain go whole in one
    # all-reduce; each matrix M (m x n) goes as P = MQ (m x r) and Q = M^T P (n x r), in two.
    r = POWERSGD_RANK
    matrices = [(s[0], math.prod(s[1:])) for s in shapes if len(s) > 1]
    matrices = [(m, n) for m, n in matrices if m * n >= 2 * (m + n) * r]
    whole = numel - sum(m * n for m, n in matrices)
    p_numel = sum(m * r for m, _ in matrices)
    q_numel = sum(n * r for _, n in matrices)
    flops = sum(6 * m * n * r for m, n in matrices)  # P = MQ, Q = M^T P, M ~ P Q^T
    seconds = link.all_reduce_s(whole * element) if whole else 0.0
    if matrices:
        seconds += link.all_reduce_s(p_numel * element) + link.all_reduce_s(q_numel * element)
    return seconds + flops / matmul_flops


def _buckets(shapes: list[tuple[int, ...]], element: int, cap_mb: float) -> list[list[tuple]]:
    """DDP's buckets: parameters in reverse order, filled up to the cap (the first bucket DDP
    makes is 1 MB, whatever the cap, so that the first sync starts early)."""
    buckets: list[list[tuple]] = [[]]
    size, limit = 0, min(1.0, cap_mb) * 2**20
    for shape in reversed(shapes):
        nbytes = math.prod(shape) * element
        if buckets[-1] and size + nbytes > limit:
            buckets.append([])
            size, limit = 0, cap_mb * 2**20
        buckets[-1].append(shape)
        size += nbytes
    return buckets


def _agreed(group, device, link: LinkCost, matmul_flops: float, backward_s: float):
    """Every rank's figures made the slowest rank's, so that all ranks choose alike (DDP's
    buckets and PowerSGD's tensors must match across ranks)."""
    mine = [link.latency_s, 1.0 / link.bytes_per_s, 1.0 / matmul_flops, backward_s]
    values = torch.tensor(mine, dtype=torch.float32, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=group)
    latency, seconds_per_byte, seconds_per_flop, backward_s = values.cpu().tolist()
    return LinkCost(latency, 1.0 / seconds_per_byte), 1.0 / seconds_per_flop, backward_s


def measure_link(group: dist.ProcessGroup | None, device: torch.device) -> LinkCost:
    """This rank's view of the group's all-reduce at two sizes, fitted to latency + bytes /
    bandwidth."""
    times = []
    for nbytes in _PROBE_BYTES:
        x = torch.zeros(nbytes // 4, device=device)
        dist.all_reduce(x, group=group)  # warm: routes and buffers
        times.append(_timed(device, functools.partial(dist.all_reduce, x, group=group)))
    small, large = _PROBE_BYTES
    slope = max((times[1] - times[0]) / (large - small), 1e-15)
    return LinkCost(max(times[0] - slope * small, 0.0), 1.0 / slope)


def measure_matmul_flops(device: torch.device, n: int = 1024, r: int = POWERSGD_RANK) -> float:
    """The device's rate on PowerSGD's shape of matmul (n x n times n x r), flop/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, r, device=device)
    a @ b
    return 2 * n * n * r / max(_timed(device, lambda: a @ b), 1e-12)


def _timed(device: torch.device, work: Callable[[], object]) -> float:
    """Seconds per call: device events where the device has them (simulated time on kpt_sim),
    the wall clock on cpu."""
    module = getattr(torch, device.type, None)
    event = getattr(module, "Event", None) if device.type != "cpu" else None
    if event is None:
        start = time.perf_counter()
        for _ in range(_PROBE_ITERS):
            work()
        return (time.perf_counter() - start) / _PROBE_ITERS
    begin, end = event(enable_timing=True), event(enable_timing=True)
    begin.record()
    for _ in range(_PROBE_ITERS):
        work()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3 / _PROBE_ITERS
