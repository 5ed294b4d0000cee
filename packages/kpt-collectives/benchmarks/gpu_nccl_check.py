"""The kpt backend over nccl on one GPU: what runs, what passes, DDP next to plain nccl.

Run on a machine with one CUDA GPU (torch with nccl); writes a JSON report to --out and prints
it. Checks, in order:
1. two processes sharing the GPU, backend "kpt" (nccl inside): an all_reduce (NCCL usually
   refuses two ranks on one GPU; the report says what happened);
2. one process (world 1): every collective through "kpt" on cuda tensors, values against the
   expected ones; DDP over "kpt" and over "nccl" from one seed give the same weights; DDP step
   times over both, interleaved ABBA, and their ratio.

    python benchmarks/gpu_nccl_check.py --out report.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import kpt.collectives  # noqa: F401  (registers "kpt")


def shared_gpu_rank(rank: int, folder: str) -> None:
    dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=60))  # fmt: skip
    x = torch.full((1024,), float(rank + 1), device="cuda:0")
    dist.all_reduce(x)
    torch.cuda.synchronize()
    print("SHARED " + json.dumps({"rank": rank, "value": float(x[0])}), flush=True)
    dist.destroy_process_group()


def try_shared_gpu() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, __file__, "--folder", folder, "--shared-rank"]
        procs = [subprocess.Popen([*command, str(r)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for r in range(2)]  # fmt: skip
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=90)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate()[0] + "\n[killed after 90 s]")
    lines = [line for out in outs for line in out.splitlines() if line.startswith("SHARED ")]
    values = [json.loads(line[len("SHARED ") :])["value"] for line in lines]
    return {"exit_codes": [p.returncode for p in procs], "values": values,
            "passed": values == [3.0, 3.0], "tail": [o[-1500:] for o in outs]}  # fmt: skip


def collectives(group: dist.ProcessGroup) -> dict:
    dev = "cuda"
    results = {}
    x = torch.arange(8, dtype=torch.float32, device=dev)
    for name, op in (("sum", dist.ReduceOp.SUM), ("avg", dist.ReduceOp.AVG),
                     ("max", dist.ReduceOp.MAX)):  # fmt: skip
        t = x.clone()
        dist.all_reduce(t, op=op, group=group)
        results[f"all_reduce_{name}"] = bool(torch.equal(t, x))
    out = torch.empty(8, device=dev)
    dist.all_gather_into_tensor(out, x, group=group)
    results["all_gather_into_tensor"] = bool(torch.equal(out, x))
    out = torch.empty(8, device=dev)
    dist.reduce_scatter_tensor(out, x, group=group)
    results["reduce_scatter_tensor"] = bool(torch.equal(out, x))
    t = x.clone()
    dist.broadcast(t, src=0, group=group)
    results["broadcast"] = bool(torch.equal(t, x))
    out = torch.empty(8, device=dev)
    dist.all_to_all_single(out, x, group=group)
    results["all_to_all_single"] = bool(torch.equal(out, x))
    work = dist.all_reduce(x.clone(), group=group, async_op=True)
    work.wait()
    results["async_wait"] = True
    return results


def ddp_runs(groups: dict, steps: int, width: int, batch: int) -> dict:
    runs = {}
    for name, group in groups.items():
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(4):
            layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers).cuda()
        ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group)
        runs[name] = (ddp, torch.optim.SGD(ddp.parameters(), lr=0.01))
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(batch, width, device="cuda", generator=g)
    y = torch.randn(batch, width, device="cuda", generator=g)
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = ("nccl", "kpt", "kpt", "nccl")
    for i in range(2 * (steps + 5)):
        name = order[i % 4]
        ddp, optimizer = runs[name]
        torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        optimizer.step()
        torch.cuda.synchronize()
        times[name].append(time.perf_counter() - start)
    weights = {name: torch.cat([p.detach().reshape(-1) for p in ddp.parameters()])
               for name, (ddp, _) in runs.items()}  # fmt: skip
    medians = {name: statistics.median(t[5:]) for name, t in times.items()}
    return {
        "same_weights": bool(torch.equal(weights["kpt"], weights["nccl"])),
        "median_step_ms": {k: v * 1e3 for k, v in medians.items()},
        "kpt_over_nccl_throughput": medians["nccl"] / medians["kpt"],
        "steps_each": steps, "width": width, "batch": batch,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared-rank", type=int)
    parser.add_argument("--folder")
    parser.add_argument("--out", default="gpu_nccl.json")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if args.shared_rank is not None:
        shared_gpu_rank(args.shared_rank, args.folder)
        return
    report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
                    "nccl": ".".join(map(str, torch.cuda.nccl.version()))}  # fmt: skip

    def stage(name: str, run) -> None:  # each stage's outcome is written as soon as known
        try:
            report[name] = run()
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(name, json.dumps(report[name])[:3000], flush=True)

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("nccl", init_method=f"file://{folder}/store", rank=0,
                                world_size=1, device_id=torch.device("cuda:0"))  # fmt: skip
        try:
            groups: dict = {"nccl": dist.group.WORLD}
            stage("world1_new_group", lambda: repr(groups.setdefault(
                "kpt", dist.new_group(backend="kpt"))))  # fmt: skip
            stage("world1_collectives", lambda: collectives(groups["kpt"]))
            stage("world1_ddp", lambda: ddp_runs(groups, args.steps, 4096, 256))
        finally:
            dist.destroy_process_group()
    stage("world2_shared_gpu", try_shared_gpu)


if __name__ == "__main__":
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    main()
