"""The standard suite against the adapter named by --kpt-adapter.

pytest --kpt-adapter cpu --pyargs kpt.hal.testing
"""

from kpt.hal.testing import AdapterConformance


class TestAdapterFromCommandLine(AdapterConformance):
    adapter = None  # taken from --kpt-adapter NAME
