"""Each simulated device's health as the daemon reports it (kpt.hal's checks read it)."""

from __future__ import annotations

import math

from kpt.sim._simulator import Simulator


def device_health(sim: Simulator, index: int) -> dict[str, str]:
    """{"state": ok | degraded | hung | lost, "reason": ...} from the faults injected so far."""
    dev, now = sim.devices[index], sim.now()
    if dev.lost_at != math.inf:
        return {"state": "lost", "reason": f"device_lost at t={dev.lost_at * 1e6:.3f} us"}
    if dev.hang_at != math.inf:
        return {"state": "hung", "reason": f"hang at t={dev.hang_at * 1e6:.3f} us"}
    slow = [(since, until, f) for since, until, f in dev.slowdowns if until > now]
    if slow:
        since, until, factor = max(slow, key=lambda entry: entry[2])
        ends = "for good" if until == math.inf else f"until t={until * 1e6:.3f} us"
        return {
            "state": "degraded",
            "reason": f"{factor:g}x slower from t={since * 1e6:.3f} us {ends}",
        }
    return {"state": "ok", "reason": ""}
