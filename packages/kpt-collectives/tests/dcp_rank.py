"""One rank of the restart test (test_restart.py), run by torchrun: python dcp_rank.py FOLDER.

DDP on the kpt backend (cpu ranks, or kpt_sim ranks when KPT_SIM_ENDPOINT is set), SGD with
momentum, STEPS steps with a checkpoint after every EVERY (kpt.collectives.save_checkpoint). On
the first attempt (TORCHELASTIC_RESTART_COUNT 0) rank 1 SIGKILLs itself at the start of step
KILL_AT; torchrun restarts both ranks, which resume from the newest checkpoint. Each rank
appends to log-<rank>.txt, one line per event: "attempt A pid P", "attempt A resume S" and,
after every optimizer step, "attempt A step S updates U" (U: the model's count of applied
updates, a buffer saved with it). At the end it writes its flat weights to weights-<rank>.npy.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ON_SIM = bool(os.environ.get("KPT_SIM_ENDPOINT"))
if ON_SIM:  # one daemon device per rank, before kpt_sim is registered
    os.environ["KPT_SIM_VISIBLE_DEVICES"] = os.environ["LOCAL_RANK"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import kpt.collectives  # noqa: E402  (registers "kpt")

if ON_SIM:
    import kpt.adapters.sim

STEPS, EVERY, KILL_AT = 10, 3, 7  # checkpoints after 3, 6, 9 steps; resume from 6
BATCH, LR, MOMENTUM = 8, 0.1, 0.9


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1234)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                       torch.nn.Linear(16, 4))  # fmt: skip
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s global batch, from the step number alone (a re-run step sees the same)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 8, generator=g), torch.randn(BATCH, 4, generator=g)


def main() -> None:
    folder = Path(sys.argv[1])
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    dist.init_process_group("kpt")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = "kpt_sim" if ON_SIM else "cpu"
    log = (folder / f"log-{rank}.txt").open("a", buffering=1)
    log.write(f"attempt {attempt} pid {os.getpid()}\n")
    model = Model().to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)
    start = kpt.collectives.load_latest_checkpoint(folder / "ckpt", ddp, optimizer)
    log.write(f"attempt {attempt} resume {start}\n")
    share = BATCH // world
    for step in range(start, STEPS):
        if attempt == 0 and rank == 1 and step == KILL_AT:
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch(step)
        x, y = x[rank * share : (rank + 1) * share].to(dev), y[rank * share : (rank + 1) * share]
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y.to(dev)).backward()
        optimizer.step()
        model.updates += 1
        log.write(f"attempt {attempt} step {step} updates {int(model.updates)}\n")
        if (step + 1) % EVERY == 0:
            kpt.collectives.save_checkpoint(folder / "ckpt", step + 1, ddp, optimizer)
    flat = torch.cat([p.detach().cpu().reshape(-1) for p in model.net.parameters()])
    np.save(folder / f"weights-{rank}.npy", flat.numpy(), allow_pickle=False)
    log.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
