"""Cost formulas: moved to kpt.adapters.sim_executor; old name kept."""

from kpt.adapters.sim_executor._estimate import *  # noqa: F403
from kpt.adapters.sim_executor._estimate import ITEMSIZES, estimate_cost  # noqa: F401
