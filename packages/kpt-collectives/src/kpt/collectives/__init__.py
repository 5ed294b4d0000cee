"""kpt.collectives: the torch.distributed backend "kpt" for every device.

``import kpt.collectives`` registers the backend; ``dist.init_process_group("kpt")`` then runs
collectives on kpt_sim tensors inside the simulator daemon, on cpu tensors with gloo, on cuda
with nccl, on xpu with xccl, and stages mixed groups through the host.
"""

import torch.distributed as _dist

from kpt.collectives._checkpoint import load_latest_checkpoint, save_checkpoint
from kpt.collectives._errors import CollectiveError, CollectiveTimeoutError
from kpt.collectives._group import BACKEND_NAME, DEVICES, KptProcessGroup
from kpt.collectives._mesh import init_device_mesh
from kpt.collectives._placement import batch_weighted_hook, split_batch
from kpt.collectives._plan import Plan, Step, device_rates, format_plans, plans
from kpt.collectives._tune import DdpChoice, LinkCost, tune_ddp
from kpt.collectives._uneven import all_gather_uneven, reduce_scatter_uneven, shard_sizes
from kpt.collectives._version import __version__

if BACKEND_NAME not in _dist.Backend.backend_list:
    _dist.Backend.register_backend(BACKEND_NAME, KptProcessGroup, devices=DEVICES)

__all__ = [
    "BACKEND_NAME",
    "CollectiveError",
    "CollectiveTimeoutError",
    "DdpChoice",
    "KptProcessGroup",
    "LinkCost",
    "Plan",
    "Step",
    "__version__",
    "all_gather_uneven",
    "batch_weighted_hook",
    "device_rates",
    "format_plans",
    "init_device_mesh",
    "load_latest_checkpoint",
    "plans",
    "reduce_scatter_uneven",
    "save_checkpoint",
    "shard_sizes",
    "split_batch",
    "tune_ddp",
]
