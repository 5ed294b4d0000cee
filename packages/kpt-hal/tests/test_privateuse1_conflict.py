"""Two adapters that both register PrivateUse1 when imported: both are `conflict`, neither is
rejected for having been imported second. Runs in a child process (it renames PrivateUse1)."""

import json
import subprocess
import sys
import textwrap

ADAPTER = """
import types
import kpt.hal as hal

hal.register_python_device({device!r}, types.ModuleType({device!r}))  # at import, as kpt_sim


class Adapter(hal.Adapter):
    name, device_type, uses_privateuse1 = {name!r}, {device!r}, True

    def probe(self):
        return hal.Probe.found(1)

    def capabilities(self, index):
        return hal.Capabilities(vendor="t", model="t", index=index, memory_total=1)

    def health(self, index):
        return hal.HealthReport(hal.HealthState.HEALTHY, "")

    def triton_target(self):
        return None

    def collectives_backend(self):
        return None
"""

CHILD = """
import importlib.metadata as md
import json
import kpt.hal as hal

points = [md.EntryPoint(name, f"{name}_module:Adapter", "kpt.adapters") for name in ("one", "two")]
registry = hal.Registry(points)
print(json.dumps({i.name: [i.status, i.reason] for i in registry.adapters()}))
"""


def test_two_adapters_claiming_privateuse1_at_import_are_both_in_conflict(tmp_path):
    for name, device in (("one", "dev_one"), ("two", "dev_two")):
        source = ADAPTER.format(name=name, device=device)
        (tmp_path / f"{name}_module.py").write_text(textwrap.dedent(source))
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    infos = json.loads(done.stdout.strip().splitlines()[-1])
    assert infos["one"][0] == infos["two"][0] == "conflict", infos
    assert "PrivateUse1" in infos["one"][1] and "two" in infos["one"][1]
    assert "PrivateUse1" in infos["two"][1] and "KPT_ADAPTERS" in infos["two"][1]
