"""What each rank process runs (see ranks.py): python -m ranks_main JOB RANK WORLD FOLDER."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import rank_jobs
import torch
import torch.distributed as dist

import kpt.collectives  # noqa: F401  (registers "kpt")


def main() -> None:
    job, rank, world, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    # Joining waits for every rank to start (slow under load); jobs that test timeouts make a
    # group of their own with a short one (rank_jobs.timed_group).
    timeout = timedelta(seconds=120)
    dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=rank,
                            world_size=world, timeout=timeout)  # fmt: skip
    torch.manual_seed(0)

    def save(name: str, value: torch.Tensor | np.ndarray) -> None:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        np.save(folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)

    try:
        getattr(rank_jobs, job)(rank, world, save)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
