from kpt.adapters.NAME import NameAdapter
from kpt.hal.testing import AdapterConformance


class TestNameStandard(AdapterConformance):
    adapter = NameAdapter
