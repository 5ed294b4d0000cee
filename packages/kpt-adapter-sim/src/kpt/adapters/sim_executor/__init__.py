"""kpt_sim's executor half: what the simulator daemon runs (loaded through the entry point
``kpt.sim.executors: torch``), never importing the client (kpt.adapters.sim).

The torch executor (``TorchExecutor``: runs allow-listed aten ops on CPU views of daemon
buffers), the allow-list, the cost formulas as a pure function of kpt.sim Views
(``launch_cost``, which the client also calls before launching), and the argument codec both
halves share (``encode_args``/``decode_args``, msgpack-safe, never pickled).
"""

from kpt.adapters.sim_executor._allowlist import ALLOWED_OPS, is_allowed
from kpt.adapters.sim_executor._executor import HOST_KERNEL_OP_PREFIX, TorchExecutor, launch_cost
from kpt.adapters.sim_executor._wirefmt import (
    DTYPE_NAMES,
    DTYPES_BY_NAME,
    decode_args,
    dtype_name,
    encode_args,
)

__all__ = [
    "ALLOWED_OPS",
    "DTYPES_BY_NAME",
    "DTYPE_NAMES",
    "HOST_KERNEL_OP_PREFIX",
    "TorchExecutor",
    "decode_args",
    "dtype_name",
    "encode_args",
    "is_allowed",
    "launch_cost",
]
