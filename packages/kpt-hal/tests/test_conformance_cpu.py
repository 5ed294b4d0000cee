"""The CPU adapter passes the standard suite, inherited the way a vendor fork inherits it."""

from kpt.hal import CpuAdapter
from kpt.hal.testing import AdapterConformance


class TestCpuAdapterStandard(AdapterConformance):
    adapter = CpuAdapter
