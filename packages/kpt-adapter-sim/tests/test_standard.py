"""The kpt.hal standard suite against the sim adapter, on an embedded simulator daemon.

Every test runs here: the simulator is the device, so CI needs no hardware. The Triton test
runs its kernel under the host interpreter and charges its time on the simulated chip.
"""

from kpt.adapters.sim_hal import SimAdapter
from kpt.hal.testing import AdapterConformance


class TestSimStandard(AdapterConformance):
    adapter = SimAdapter
    require_hardware = True  # the simulator is always there: a skip would hide a failure
