"""The kpt.hal standard suite against the nvidia adapter.

Without the hardware, only the identity, probe and discovery tests run (the probe must say
why it found nothing); the rest skip with that reason. On a machine with the hardware:
`pytest packages/kpt-adapter-nvidia/tests/test_standard.py --kpt-require-hardware`.
"""

from kpt.adapters.nvidia import NvidiaAdapter
from kpt.hal.testing import AdapterConformance


class TestNvidiaStandard(AdapterConformance):
    adapter = NvidiaAdapter
