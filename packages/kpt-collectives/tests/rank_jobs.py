"""The jobs ranks run in the multi-process tests (ranks_main.py); each saves what tests compare.

Inputs are made from the rank number alone, so the test recomputes every expected value on the
CPU. A job picks its device from the environment: kpt_sim when KPT_SIM_ENDPOINT is set (rank
r's KPT_SIM_VISIBLE_DEVICES is r), else cpu; KPT_TEST_CPU_RANKS lists ranks kept on cpu.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

import kpt.collectives
from kpt.collectives import batch_weighted_hook, split_batch

TIMEOUTS = {
    "straggler": 4,
    "killed_mid_step": 4,
    "ddp_killed_in_backward": 4,
    "idle_after_post": 30,
}
N = 6  # elements per rank in the value tests
HIERARCHICAL_N = 1001  # odd: the shards of a two-rank vendor group need padding
OPS = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX,
       "min": dist.ReduceOp.MIN, "prod": dist.ReduceOp.PRODUCT}  # fmt: skip


def device(rank: int) -> str:
    cpu_ranks = os.environ.get("KPT_TEST_CPU_RANKS", "")
    if os.environ.get("KPT_SIM_ENDPOINT") and str(rank) not in cpu_ranks.split(","):
        import kpt.adapters.sim  # noqa: F401  (registers kpt_sim)

        return "kpt_sim"
    return "cpu"


def rank_values(rank: int, n: int = N) -> torch.Tensor:
    """What rank r contributes: distinct per rank, exact in float32 under every reduction."""
    return torch.arange(n, dtype=torch.float32) * (rank + 1) - rank


def premul_factor(rank: int) -> float:
    return (rank + 1) / 4  # exact in float32


def every_collective(rank, world, save):
    dev = device(rank)
    mine = rank_values(rank).to(dev)
    for name, op in OPS.items():
        t = mine.clone()
        dist.all_reduce(t, op=op)
        save(f"all_reduce_{name}_{rank}", t)
    # PREMUL_SUM (NCCL's per-rank scaled sum, as batch_weighted_hook uses it)
    t = mine.clone()
    dist.all_reduce(t, op=dist._make_nccl_premul_sum(premul_factor(rank)))
    save(f"all_reduce_premul_sum_{rank}", t)
    outs = [torch.empty(N, device=dev) for _ in range(world)]
    dist.all_gather(outs, mine)
    save(f"all_gather_{rank}", torch.stack([o.cpu() for o in outs]))
    flat = torch.empty(world * N, device=dev)
    dist.all_gather_into_tensor(flat, mine)
    save(f"all_gather_into_tensor_{rank}", flat)
    big = rank_values(rank, world * N).to(dev)
    out = torch.empty(N, device=dev)
    dist.reduce_scatter_tensor(out, big)
    save(f"reduce_scatter_tensor_{rank}", out)
    out = torch.empty(N, device=dev)
    dist.reduce_scatter_tensor(out, big, op=dist._make_nccl_premul_sum(premul_factor(rank)))
    save(f"reduce_scatter_premul_sum_{rank}", out)
    out = torch.empty(N, device=dev)
    dist.reduce_scatter(out, list(big.chunk(world)), op=dist.ReduceOp.MAX)
    save(f"reduce_scatter_max_{rank}", out)
    t = mine.clone()
    dist.broadcast(t, src=world - 1)
    save(f"broadcast_{rank}", t)
    out = torch.empty(world * N, device=dev)
    dist.all_to_all_single(out, big)
    save(f"all_to_all_single_{rank}", out)
    outs = [torch.empty(N, device=dev) for _ in range(world)]
    dist.all_to_all(outs, list(big.chunk(world)))
    save(f"all_to_all_{rank}", torch.cat([o.cpu() for o in outs]))
    # uneven splits: rank r sends j+1 elements to rank j
    send_sizes = [j + 1 for j in range(world)]
    recv_sizes = [rank + 1] * world
    src = rank_values(rank, sum(send_sizes)).to(dev)
    out = torch.empty(sum(recv_sizes), device=dev)
    dist.all_to_all_single(out, src, recv_sizes, send_sizes)
    save(f"all_to_all_uneven_{rank}", out)
    # point to point around a ring, async
    right, left = (rank + 1) % world, (rank - 1) % world
    got = torch.empty(N, device=dev)
    works = [dist.isend(mine, right), dist.irecv(got, left)]
    for w in works:
        w.wait()
    save(f"ring_{rank}", got)
    # async all-reduce: the Work completes; its future gives the tensor
    t = mine.clone()
    work = dist.all_reduce(t, async_op=True)
    work.wait()
    save(f"async_{rank}", t)
    dist.barrier()
    save(f"done_{rank}", np.array([1]))


def timed_group(job: str, world: int):
    """A group whose collectives time out after TIMEOUTS[job]. The default group keeps a long
    timeout, so joining (process start and imports, slow on a loaded machine) never trips it."""
    return dist.new_group(list(range(world)), timeout=timedelta(seconds=TIMEOUTS[job]))


def straggler(rank, world, save):
    """Rank 1 never joins the all-reduce: rank 0 must get an error in time (on kpt_sim a
    CollectiveTimeoutError naming rank 1; on cpu gloo's own error, its Work being gloo's)."""
    dev = device(rank)
    group = timed_group("straggler", world)
    t = rank_values(rank).to(dev)
    dist.all_reduce(t, group=group)  # together once: the group has agreed on its route
    if rank == 1:
        time.sleep(TIMEOUTS["straggler"] + 8)
        return
    start = time.monotonic()
    try:
        dist.all_reduce(t, group=group)
        t.cpu()  # as NCCL's, the Work is complete at once: the failure comes with the result
    except Exception as exc:
        save("straggler_error", np.array([f"{type(exc).__name__}: {exc}"]))
    save("straggler_seconds", np.array([time.monotonic() - start]))


def idle_after_post(rank, world, save):
    """Rank 1 posts its part, then waits on the host alone (the store) until rank 0 holds the
    sum: its part must reach the daemon with no later call of its own (kpt_sim queues a post
    with the launches; the completion thread's poll sends it). Were it left in the queue, rank
    0's read would fail at the group's timeout."""
    group = timed_group("idle_after_post", world)
    t = rank_values(rank).to(device(rank))
    dist.all_reduce(t, group=group)
    store = dist.distributed_c10d._get_default_store()
    if rank == 0:
        save("idle_after_post_0", t)
        store.set("idle_after_post/0", "read")
    else:
        store.wait(["idle_after_post/0"], timedelta(seconds=120))
        save("idle_after_post_1", t)


# -- training: DDP on each rank's share of one global batch ------------------------------------
GLOBAL_BATCH = 12
STEPS = 3
LR = 0.1


def make_model() -> torch.nn.Module:
    torch.manual_seed(1234)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(99)
    return [(torch.randn(GLOBAL_BATCH, 8, generator=g), torch.randn(GLOBAL_BATCH, 4, generator=g))
            for _ in range(STEPS)]  # fmt: skip


def throughputs(world: int) -> list[float]:
    """h100-sxm and mi300x (the daemon's two chips): their bf16 peaks decide the split."""
    peaks = [989.4e12, 1307.4e12, 989.4e12, 1307.4e12]
    return peaks[:world]


def train_single() -> torch.nn.Module:
    """The reference: one process, the whole global batch, plain SGD."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for x, y in batches():
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model


def ddp_split(rank, world, save):
    dev = device(rank)
    sizes = split_batch(GLOBAL_BATCH, throughputs(world))
    start = sum(sizes[:rank])
    model = make_model().to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(sizes[rank] / GLOBAL_BATCH, batch_weighted_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
    for x, y in batches():
        x, y = x[start : start + sizes[rank]].to(dev), y[start : start + sizes[rank]].to(dev)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        optimizer.step()
    flat = torch.cat([p.detach().cpu().reshape(-1) for p in model.parameters()])
    save(f"weights_{rank}", flat)
    save(f"sizes_{rank}", np.array(sizes))


def ddp_powersgd(rank, world, save):
    """torch's PowerSGD hook (rank-1 factors, error feedback, warm start; plain all-reduces for
    the first 2 steps), each rank on an equal share: the hook posts its next all-reduces from
    the callbacks of the previous ones. Saves the weights after the plain steps and at the end."""
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd

    dev = device(rank)
    model = make_model().to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    state = powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=1,
                                   start_powerSGD_iter=2, min_compression_rate=1)  # fmt: skip
    ddp.register_comm_hook(state, powersgd.powerSGD_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
    share = GLOBAL_BATCH // world
    for step, (x, y) in enumerate(batches() * 2):
        mine = slice(rank * share, (rank + 1) * share)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(ddp(x[mine].to(dev)), y[mine].to(dev)).backward()
        optimizer.step()
        if step in (1, 5):
            flat = torch.cat([p.detach().cpu().reshape(-1) for p in model.parameters()])
            save(f"{'plain' if step == 1 else 'weights'}_{rank}", flat)


def fsdp2(rank, world, save):
    """FSDP2 (fully_shard) on each rank's equal share: the mean of the shard losses' gradients
    is the whole batch's gradient."""
    from torch.distributed.fsdp import fully_shard

    from kpt.collectives import init_device_mesh  # torch's refuses the name "kpt_sim"

    dev = device(rank)
    mesh = init_device_mesh(dev, (world,))
    model = make_model().to(dev)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    share = GLOBAL_BATCH // world
    for x, y in batches():
        x = x[rank * share : (rank + 1) * share].to(dev)
        y = y[rank * share : (rank + 1) * share].to(dev)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    full = []
    for p in model.parameters():  # every rank's shard of dim 0 (the shapes here split evenly)
        local = p.to_local().detach().contiguous()
        gathered = torch.empty((world * local.shape[0], *local.shape[1:]), device=dev)
        dist.all_gather_into_tensor(gathered, local)
        full.append(gathered.cpu().reshape(-1))
    save(f"weights_{rank}", torch.cat(full))


def dtensor(rank, world, save):
    """A DTensor sharded by rows: its local shard, `full_tensor()` and a redistribution to
    replicated (functional collectives, whose results torch wraps in its own custom ops)."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from kpt.collectives import init_device_mesh

    dev = device(rank)
    mesh = init_device_mesh(dev, (world,))
    sharded = distribute_tensor(torch.arange(24.0).reshape(6, 4).to(dev), mesh, [Shard(0)])
    save(f"local_{rank}", sharded.to_local())
    save(f"full_{rank}", sharded.full_tensor())
    save(f"replicated_{rank}", (sharded * 2).redistribute(mesh, [Replicate()]).to_local())


def killed_mid_step(rank, world, save):
    """A data-parallel step (backward, one all-reduce per gradient, the optimizer step); in its
    second step rank 1 is killed (SIGKILL) between two gradient all-reduces. Rank 0 must get an
    error naming rank 1 within the collective timeout, never a hang (on kpt_sim, as with NCCL,
    from the first use of an all-reduced gradient: the Work completes at the post)."""
    import signal

    dev = device(rank)
    group = timed_group("killed_mid_step", world)
    model = make_model().to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    (x, y), start = batches()[0], time.monotonic()
    x, y = x.to(dev), y.to(dev)
    try:
        for step in range(3):
            start = time.monotonic()
            model.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            for i, p in enumerate(model.parameters()):
                if rank == 1 and step == 1 and i == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                dist.all_reduce(p.grad, group=group)
            optimizer.step()
    except Exception as exc:
        save("killed_error", np.array([f"{type(exc).__name__}: {exc}"]))
    save("killed_seconds", np.array([time.monotonic() - start]))


def ddp_killed_in_backward(rank, world, save):
    """DDP's own all-reduces (tiny buckets): rank 1 is killed (SIGKILL) inside its second
    backward pass, from a gradient hook. Rank 0's step must raise an error naming rank 1 within
    the collective timeout (it used to crash in DDP's reducer)."""
    import signal

    dev = device(rank)
    group = timed_group("ddp_killed_in_backward", world)
    model = torch.nn.parallel.DistributedDataParallel(
        make_model().to(dev), process_group=group, bucket_cap_mb=1e-5
    )
    step = 0

    def die_in_second_backward(grad):
        if step == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return grad

    if rank == 1:
        next(iter(model.parameters())).register_hook(die_in_second_backward)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    (x, y), start = batches()[0], time.monotonic()
    x, y = x.to(dev), y.to(dev)
    try:
        for step in range(3):  # noqa: B007  (the hook reads it)
            start = time.monotonic()
            model.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    except Exception as exc:
        save("killed_error", np.array([f"{type(exc).__name__}: {exc}"]))
    save("killed_seconds", np.array([time.monotonic() - start]))


# -- uneven shards: sizes in proportion to speed ----------------------------------------------
ROW = 3  # elements per row: shards are rows along dim 0


def uneven_sizes(world: int) -> list[int]:
    """2 ranks: shard_sizes(11, h100-sxm and mi300x peaks) = [5, 6]; 3 ranks: one empty shard."""
    return kpt.collectives.shard_sizes(11, throughputs(2)) if world == 2 else [4, 0, 7]


def uneven_shards(rank, world, save):
    dev = device(rank)
    sizes = uneven_sizes(world)
    total = sum(sizes)
    shard = rank_values(rank, sizes[rank] * ROW).reshape(sizes[rank], ROW).to(dev)
    gathered = torch.full((total, ROW), -1.0, device=dev)
    kpt.collectives.all_gather_uneven(gathered, shard, sizes)
    save(f"uneven_gather_{rank}", gathered)
    full = rank_values(rank, total * ROW).reshape(total, ROW).to(dev)
    for name in ("sum", "max", "avg"):
        out = torch.full((sizes[rank], ROW), -1.0, device=dev)
        kpt.collectives.reduce_scatter_uneven(out, full, sizes, op=OPS[name])
        save(f"uneven_scatter_{name}_{rank}", out)
    try:  # the list forms refuse uneven sizes, pointing at the helpers
        dist.all_gather([torch.empty(s * ROW, device=dev) for s in sizes], shard.reshape(-1))
    except Exception as exc:
        save(f"uneven_list_error_{rank}", np.array([f"{type(exc).__name__}: {exc}"]))
    dist.barrier()


def hierarchical_all_reduce(rank, world, save):
    """A mixed group's all_reduce of an odd-sized tensor under every op; the plan that ran."""
    dev = device(rank)
    for name, op in OPS.items():
        t = rank_values(rank, HIERARCHICAL_N).to(dev)
        dist.all_reduce(t, op=op)
        save(f"hierarchical_{name}_{rank}", t)
    backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device(dev))
    save(f"hierarchical_ran_{rank}", np.array([backend.routes._hierarchy is not None]))
