"""The argument codec: moved to kpt.adapters.sim_executor; old name kept."""

from kpt.adapters.sim_executor._wirefmt import *  # noqa: F403
from kpt.adapters.sim_executor._wirefmt import (  # noqa: F401
    DTYPE_NAMES,
    DTYPES_BY_NAME,
    decode_args,
    dtype_name,
    encode_args,
)
