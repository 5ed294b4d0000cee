"""A CPU fallback of an asynchronous op (gloo collectives) waits for its Work before copying back.

Two real processes, a gloo process group over a file:// store, kpt_sim tensors on the shared
session daemon: the sum must be [3, 3, 3, 3] on both ranks, whether the caller waits or not.
"""

import os
import subprocess
import sys

import pytest

from kpt.adapters.sim._runtime import runtime

pytestmark = pytest.mark.timeout(180)
WAIT_S = 150

RANK = """
import sys, warnings, torch, torch.distributed as dist
import kpt.adapters.sim
warnings.simplefilter("ignore")
rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
mine = torch.full((4,), float(rank + 1), device="kpt_sim")
dist.all_reduce(mine, async_op=True).wait()
plain = torch.full((4,), float(rank + 1), device="kpt_sim")
dist.all_reduce(plain)  # async inside: the op returns a Work that the wrapper waits on
gathered = [torch.zeros(2, device="kpt_sim") for _ in range(2)]
dist.all_gather(gathered, torch.full((2,), float(rank), device="kpt_sim"))
print("async", mine.cpu().tolist(), "sync", plain.cpu().tolist(),
      "gather", [g.cpu().tolist() for g in gathered], flush=True)
dist.destroy_process_group()
"""


def test_gloo_all_reduce_on_kpt_sim_waits_for_its_work(sim, tmp_path):
    env = {**os.environ, "KPT_SIM_ENDPOINT": runtime().client.endpoint}
    store = tmp_path / "store"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(rank), str(store)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for process in ranks:
            out, err = process.communicate(timeout=WAIT_S)
            assert process.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
    for out in outputs:
        line = next(x for x in out.splitlines() if x.startswith("async"))
        assert line == (
            "async [3.0, 3.0, 3.0, 3.0] sync [3.0, 3.0, 3.0, 3.0] gather [[0.0, 0.0], [1.0, 1.0]]"
        ), out
