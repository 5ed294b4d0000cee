"""What a vendor's fork relies on: a hook for dtypes a board lacks, a probe reason that names
the vendor, and discovery asking capabilities() (where a new device type registers) before it
builds a torch.device of that type."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

from kpt.hal import TorchDeviceAdapter


class FakeBackend:
    """torch.<type> for one H100-like board (or none)."""

    def __init__(self, names):
        self.names = names

    def is_available(self):
        return bool(self.names)

    def device_count(self):
        return len(self.names)

    def get_device_properties(self, index):
        return SimpleNamespace(name=self.names[index], total_memory=80 * 2**30)

    def memory_reserved(self, index):
        return 2**30


class Vendor(TorchDeviceAdapter):
    name, device_type, vendor, looked_for = "vendor", "cuda", "nvidia", "fake cards"

    def collectives_backend(self):
        return None

    def triton_target(self):
        return "cuda"


class NoFloat64(Vendor):
    def _unsupported_dtypes(self, index, props):
        return {"float64"}


def test_a_board_without_float64_overrides_one_hook_not_capabilities():
    full = Vendor(FakeBackend(["NVIDIA H100 80GB HBM3"])).capabilities(0)
    lacking = NoFloat64(FakeBackend(["NVIDIA H100 80GB HBM3"])).capabilities(0)
    assert "float64" in full.dtypes and "float64" not in lacking.dtypes
    assert lacking.dtypes == full.dtypes - {"float64"}
    assert lacking.peak_flops == full.peak_flops  # the rest of capabilities() unchanged


def test_no_device_names_the_vendor_looked_for():
    absent = Vendor(FakeBackend([])).probe()
    assert absent.reason.startswith(f"no {Vendor.vendor} device visible")


def test_discovery_lets_a_new_device_type_register_in_capabilities():
    """torch.device("acmechip") fails until registered; discovery must not build it first."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import types, torch
            import kpt.hal as hal

            class Acme(hal.CpuAdapter):
                name, device_type, uses_privateuse1 = "acmechip", "acmechip", True

                def capabilities(self, index):
                    module = types.ModuleType("acmechip")
                    module.is_available, module.device_count = (lambda: True), (lambda: 1)
                    hal.register_python_device("acmechip", module)  # first use, not import
                    return super().capabilities(index)

            registry = hal.Registry(entry_points=[])
            registry.register(Acme)
            info = {i.name: i for i in registry.adapters()}["acmechip"]
            print(info.status, info.reason)
            print([str(d.torch_device) for d in registry.devices()])
        """)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("loaded"), done.stdout
    assert "acmechip:0" in done.stdout
