"""The daemon's per-device health field, as the sim adapter reads it (issue 10, defect 9).
End to end (faults injected into a daemon, `kpt devices`, select, metrics):
integration_tests/test_health_faults.py."""

import pytest

from kpt.adapters.sim_hal._health import judge
from kpt.hal import HealthState


@pytest.mark.parametrize(
    ("verdict", "state", "reason"),
    [
        (None, HealthState.HEALTHY, ""),  # a daemon that does not send the field yet
        ({"state": "ok", "reason": ""}, HealthState.HEALTHY, ""),
        ({"state": "degraded", "reason": "5x slower"}, HealthState.DEGRADED, "degraded: 5x slower"),
        ({"state": "hung", "reason": "hang at t=1 us"}, HealthState.FAILED, "hung: hang at t=1 us"),
        ({"state": "lost", "reason": "device_lost"}, HealthState.FAILED, "lost: device_lost"),
        ("garbage", HealthState.HEALTHY, ""),
    ],
)
def test_daemon_states_map_to_health_states(verdict, state, reason):
    report = judge(verdict, {"memory_free": 1.0})
    assert (report.state, report.reason) == (state, reason)
    assert report.readings["memory_free"] == 1.0


def test_an_unknown_daemon_state_is_degraded_and_says_to_upgrade():
    report = judge({"state": "melting", "reason": "?"}, {})
    assert report.state == HealthState.DEGRADED and "upgrade kpt-adapter-sim" in report.reason
