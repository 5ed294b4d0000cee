"""The kpt.hal standard suite against the amd adapter.

Without the hardware, only the identity, probe and discovery tests run (the probe must say
why it found nothing); the rest skip with that reason. On a machine with the hardware:
`pytest packages/kpt-adapter-amd/tests/test_standard.py --kpt-require-hardware`.
"""

from kpt.adapters.amd import AmdAdapter
from kpt.hal.testing import AdapterConformance


class TestAmdStandard(AdapterConformance):
    adapter = AmdAdapter
