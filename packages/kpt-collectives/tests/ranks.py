"""Start real rank processes (one interpreter each) and collect what they write; none is left.

A rank runs ``python -m ranks_main JOB RANK WORLD FOLDER`` with the folder's file store as the
rendezvous; it writes its results as .npy files (never pickled) and "ok" when it finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RANK_LIMIT_S = 300.0  # a rank on a loaded 2-core machine: imports alone can take a minute


def run_ranks(
    job: str, world: int, folder: Path, endpoint: str | None = None,
    limit_s: float = RANK_LIMIT_S, **env: str,
) -> list[subprocess.CompletedProcess]:  # fmt: skip
    """Run `job` on `world` ranks; every process is waited for or killed before returning."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    base = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", **env)
    if endpoint is not None:
        base["KPT_SIM_ENDPOINT"] = endpoint
    procs = []
    try:
        for rank in range(world):
            rank_env = dict(base)
            if endpoint is not None and "KPT_SIM_VISIBLE_DEVICES" not in env:
                rank_env["KPT_SIM_VISIBLE_DEVICES"] = str(rank)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ranks_main", job, str(rank), str(world), str(folder)],
                env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
        deadline = time.monotonic() + limit_s
        results = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                out += f"\n[killed after {limit_s} s]"
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_ok(results: list[subprocess.CompletedProcess]) -> None:
    for rank, r in enumerate(results):
        assert r.returncode == 0, f"rank {rank} failed (exit {r.returncode}):\n{r.stdout[-4000:]}"


def load(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / f"{name}.npy", allow_pickle=False)
