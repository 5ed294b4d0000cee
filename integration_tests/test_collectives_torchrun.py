"""The kpt backend under torchrun: two ranks on one `kpt-sim serve` daemon (h100-sxm + mi300x)
train with DDP and end with the weights of one process trained on the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

RANK_SCRIPT = """
import json, os
os.environ["KPT_SIM_VISIBLE_DEVICES"] = os.environ["LOCAL_RANK"]  # one daemon device per rank
import torch, torch.distributed as dist, kpt.adapters.sim, kpt.collectives
dist.init_process_group("kpt")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
g = torch.Generator().manual_seed(1)
x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
ddp = torch.nn.parallel.DistributedDataParallel(model.to("kpt_sim"))
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
half = slice(rank * 4, rank * 4 + 4)
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.mse_loss(ddp(x[half].to("kpt_sim")), y[half].to("kpt_sim")).backward()
    opt.step()
weights = [p.detach().cpu().reshape(-1).tolist() for p in model.parameters()]
result = {"rank": rank, "backend": dist.get_backend(), "weights": weights}
with open(os.path.join(os.environ["RESULT_DIR"], f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
dist.destroy_process_group()
"""


def reference() -> list[list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach().reshape(-1).tolist() for p in model.parameters()]


def test_ddp_under_torchrun_on_one_daemon_matches_one_process(daemon, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(script)]  # fmt: skip
    # Each rank writes its own file: the ranks share torchrun's stdout, and two prints of more
    # than a pipe's atomic write (4 KiB) can interleave there.
    env = dict(os.environ, KPT_SIM_ENDPOINT=daemon, OMP_NUM_THREADS="1", RESULT_DIR=str(tmp_path))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert {r["backend"] for r in results} == {"kpt"}
    expected = reference()
    for r in results:
        for got, want in zip(r["weights"], expected):
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-6)
