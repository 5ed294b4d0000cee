"""The torch executor: moved to kpt.adapters.sim_executor (the daemon's half); old name kept."""

from kpt.adapters.sim_executor._executor import *  # noqa: F403
from kpt.adapters.sim_executor._executor import (  # noqa: F401  (private names some callers use)
    HOST_KERNEL_OP_PREFIX,
    ITEMSIZE,
    OpCost,
    TorchExecutor,
    launch_cost,
)
