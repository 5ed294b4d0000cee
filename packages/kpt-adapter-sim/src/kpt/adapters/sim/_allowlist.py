"""The allow-list: moved to kpt.adapters.sim_executor; old name kept (hooks import it here)."""

from kpt.adapters.sim_executor._allowlist import ALLOWED_OPS, is_allowed

__all__ = ["ALLOWED_OPS", "is_allowed"]
