"""A heterogeneous data-parallel job on simulated chips: each chip alone, then both with DDP.

`run_job` starts one daemon (one device per chip) and one process per chip
(``python -m kpt.collectives._hetero RANK WORLD FOLDER CONFIG_JSON``). Each rank first trains
alone on the whole global batch (its single-chip throughput, in simulated time); the ranks share
those throughputs through the backend and split the batch with `split_batch`. Each rank then
trains alone on its share; as a chip's throughput depends on its batch, the ranks split once
more by the throughputs at those shares (and time the new shares alone). Both then train with
DDP and the batch-weighted hook. Each rank reports its simulated step times and
the daemon's timing of every gradient all-reduce (duration and its algorithm's closed form).

The daemon runs timing-only by default (no values: the matmuls that make a step device-bound
would take minutes on a CPU host). DDP reads device values in two places, which a timing-only
daemon answers with zeros: its parameter-shape check at construction (skipped: ``init_sync=
False``, every rank builds the same model from one seed) and the bucket-order broadcast before its
second step (avoided: ``find_unused_parameters=True`` never rebuilds buckets, and with every
parameter used it reads nothing back).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from kpt.collectives._placement import buffer_once_reduced, split_batch, weighted_all_reduce

RESULT_PREFIX = "KPT-HETERO-RESULT "


@dataclass
class HeteroJob:
    """What to train where: an MLP of `depth` square layers, one rank per chip."""

    chips: tuple[str, ...] = ("h100-sxm", "mi300x")
    width: int = 4096
    depth: int = 4
    global_batch: int = 8192
    steps: int = 3
    numerics: bool = False  # timing only (see the module's docstring)
    limit_s: float = 600.0  # every rank process is killed past this

    def profile(self) -> str:
        return ",".join(f"{chip}:1" for chip in self.chips)


@dataclass
class RankReport:
    """One rank's simulated figures (seconds)."""

    chip: str
    alone_step_s: float  # alone on the global batch
    batch: int = 0  # its share in the pair
    pair_step_s: float = 0.0
    alone_share_step_s: float = 0.0  # alone on its share of the batch
    all_reduces: list[dict] = field(default_factory=list)  # duration, predicted, nbytes


def run_job(job: HeteroJob) -> list[RankReport]:
    """Start a daemon and one process per chip; every process is waited for or killed."""
    import kpt.sim  # the [sim] extra

    daemon = kpt.sim.start_daemon(
        profile=job.profile(), devices=len(job.chips), executor="torch", numerics=job.numerics
    )
    try:
        with tempfile.TemporaryDirectory(prefix="kpt-hetero-") as folder:
            outputs = _run_ranks(job, daemon.endpoint, folder)
    finally:
        daemon.stop()
    line = next(x for x in outputs[0].splitlines() if x.startswith(RESULT_PREFIX))
    return [RankReport(**r) for r in json.loads(line[len(RESULT_PREFIX) :])]


def _run_ranks(job: HeteroJob, endpoint: str, folder: str) -> list[str]:
    world = len(job.chips)
    config = json.dumps(asdict(job))
    procs: list[subprocess.Popen] = []
    try:
        for rank in range(world):
            env = dict(os.environ, KPT_SIM_ENDPOINT=endpoint, KPT_SIM_VISIBLE_DEVICES=str(rank),
                       OMP_NUM_THREADS="1")  # fmt: skip
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "kpt.collectives._hetero", str(rank), str(world), folder,
                 config],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
        deadline = time.monotonic() + job.limit_s
        outputs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                out += f"\n[killed after {job.limit_s:g} s]"
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        if p.returncode != 0:
            raise RuntimeError(f"hetero rank {rank} failed (exit {p.returncode}):\n{out[-4000:]}")
    return outputs


# -- inside a rank process ---------------------------------------------------------------------
def _make_model(job: HeteroJob) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(job.depth):
        layers += [torch.nn.Linear(job.width, job.width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).to("kpt_sim")


def wrap_ddp(model: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
    """DDP as a timing-only daemon allows (module docstring): no parameter check at start,
    find_unused_parameters so that buckets are never rebuilt, and one bucket per parameter.

    DDP lays its first buckets out in parameter order: here each layer's bias shares a bucket
    with the next layer's weight, so that weight's all-reduce waits for the bias that backward
    makes last, and two of the four 67 MB all-reduces wait for the end of backward. On a GPU, DDP
    rebuilds its buckets in the order the gradients came after its first step (one bucket per
    layer here), which find_unused_parameters forbids. One bucket per parameter leaves only the
    first layer's sync exposed, as the rebuilt layout does."""
    smallest = min(p.numel() * p.element_size() for p in model.parameters())
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, init_sync=False, find_unused_parameters=True, gradient_as_bucket_view=True,
        bucket_cap_mb=smallest / 2**20,  # every parameter fills its own bucket
    )  # fmt: skip
    # find_unused_parameters makes DDP clone the model's outputs each step (its _DDPSink), which
    # DDP without it does not; the loss is not changed in place, so the clone is not needed.
    ddp._set_ddp_sink_clone(False)
    return ddp


def _timed_steps(job: HeteroJob, model: torch.nn.Module, batch: int) -> float:
    """Simulated seconds per training step (one warm step first, then `job.steps`)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, job.width).to("kpt_sim")
    y = torch.randn(batch, job.width).to("kpt_sim")

    def step() -> None:
        optimizer.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        optimizer.step()

    step()
    start = torch.kpt_sim.Event(enable_timing=True)
    end = torch.kpt_sim.Event(enable_timing=True)
    start.record()
    for _ in range(job.steps):
        step()
    end.record()
    wait_in_lockstep(end)
    return start.elapsed_time(end) / 1e3 / job.steps


def wait_in_lockstep(event: Any) -> None:
    """Wait for `event` with every rank's work issued and no rank's next work begun.

    The daemon's simulation has one present for all clients: a rank's wait runs it forward,
    and no later launch, by any rank, issues before it (kpt-sim README, "Weak spots"). A rank
    still issuing while another waits would be timed by the order the ranks reach the daemon,
    which a loaded machine reshuffles. Host barriers (gloo: no simulated time) around the wait
    make the order irrelevant."""
    dist.barrier()
    event.synchronize()
    dist.barrier()


def _recording_hook(state, bucket):  # DDP checks these annotations: none, or its own
    """batch_weighted_hook that keeps each all-reduce's Work (for the daemon's timing)."""
    weight, works = state
    buffer = bucket.buffer()
    work = weighted_all_reduce(buffer, weight)
    works.append(work)
    return work.get_future().then(functools.partial(buffer_once_reduced, buffer))


def _rank_main(rank: int, world: int, folder: str, config: dict) -> None:
    import kpt.adapters.sim  # noqa: F401  (registers kpt_sim)

    job = HeteroJob(**{**config, "chips": tuple(config["chips"])})
    dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=rank,
                            world_size=world, timeout=timedelta(seconds=job.limit_s))  # fmt: skip
    report = RankReport(job.chips[rank], _timed_steps(job, _make_model(job), job.global_batch))
    sizes = split_batch(job.global_batch, _every_rank(job.global_batch / report.alone_step_s))
    # A chip's samples/s depend on its batch: split again by the rates at these shares.
    share_s = _timed_steps(job, _make_model(job), sizes[rank])
    resized = split_batch(job.global_batch, _every_rank(sizes[rank] / share_s))
    if resized != sizes:
        sizes, share_s = resized, _timed_steps(job, _make_model(job), resized[rank])
    report.batch, report.alone_share_step_s = sizes[rank], share_s
    works: list = []
    ddp = wrap_ddp(_make_model(job))
    ddp.register_comm_hook((sizes[rank] / job.global_batch, works), _recording_hook)
    report.pair_step_s = _timed_steps(job, ddp, sizes[rank])
    timed = works[-len(works) * job.steps // (job.steps + 1) :]  # the timed steps' buckets
    report.all_reduces = [dict(w.timing) for w in timed if getattr(w, "timing", None)]
    reports = _gather_reports(report, world)
    dist.destroy_process_group()
    if rank == 0:
        print(RESULT_PREFIX + json.dumps([asdict(r) for r in reports]), flush=True)


def _every_rank(value: float) -> list[float]:
    """Every rank's `value`, in rank order (cpu tensors: through the backend's host route)."""
    every = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(every, torch.tensor([value], dtype=torch.float64))
    return [float(t) for t in every]


def _gather_reports(report: RankReport, world: int) -> list[RankReport]:
    """Every rank's report on rank 0, as JSON bytes through the store (never pickled)."""
    store = dist.distributed_c10d._get_default_store()
    store.set(f"kpt-hetero-report/{dist.get_rank()}", json.dumps(asdict(report)))
    if dist.get_rank() != 0:
        dist.barrier()
        return []
    texts = [store.get(f"kpt-hetero-report/{r}").decode() for r in range(world)]
    dist.barrier()
    return [RankReport(**json.loads(t)) for t in texts]


if __name__ == "__main__":
    _rank_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
