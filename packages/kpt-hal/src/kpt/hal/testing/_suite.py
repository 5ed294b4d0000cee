"""AdapterConformance: the standard tests an adapter must pass, as a class to subclass.

Tests that only talk to the adapter (probe, discovery, identity) always run, so a vendor's
CI without the hardware still checks that the adapter explains itself. Tests that need a
device skip with the probe's reason when there is none (fail with --kpt-require-hardware).
"""

from __future__ import annotations

import copy
import datetime
import math
from typing import Any, ClassVar

import pytest
import torch

from kpt.hal._adapter import Adapter
from kpt.hal._discovery import Registry
from kpt.hal._triton import TritonRun, run_triton, triton_available
from kpt.hal._types import Capabilities, HealthReport, HealthState, Probe
from kpt.hal.testing._checks import (
    KNOWN_TRITON_TARGETS,
    PLUGIN_COLLECTIVES,
    matmul_tolerance,
    relative_error,
    resolve_adapter,
    same_bits,
    sample,
    torch_dtype,
)

_MATMUL_DTYPES = ("float64", "float32", "float16", "bfloat16")
_FLOAT8 = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")


class AdapterConformance:
    """Subclass with `adapter = YourAdapter` (a class or an instance) in a Test* class."""

    adapter: ClassVar[Any] = None  # None: the adapter named by --kpt-adapter
    device_index: ClassVar[int] = 0  # which device the hardware tests use
    require_hardware: ClassVar[bool] = False  # fail instead of skip without a device

    # ---- fixtures -----------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def hal_adapter(cls, request: pytest.FixtureRequest) -> Adapter:
        return resolve_adapter(cls.adapter, request.config)

    @pytest.fixture(scope="class")
    @classmethod
    def hal_probe(cls, hal_adapter: Adapter) -> Probe:
        probe = hal_adapter.probe()
        assert isinstance(probe, Probe), f"probe() returned {type(probe).__name__}, not a Probe"
        return probe

    @pytest.fixture(scope="class")
    @classmethod
    def hal_index(cls, request: pytest.FixtureRequest, hal_adapter: Adapter, hal_probe: Probe):
        index = cls.device_index
        if hal_probe.count > index:
            return index
        why = (
            f"adapter {hal_adapter.name!r} has no device {index}: "
            f"{hal_probe.reason or f'probe found {hal_probe.count} device(s)'}"
        )
        if cls.require_hardware or request.config.getoption("kpt_require_hardware", False):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)

    @pytest.fixture(scope="class")
    @classmethod
    def hal_capabilities(cls, hal_adapter: Adapter, hal_index: int) -> Capabilities:
        caps = hal_adapter.capabilities(hal_index)
        assert isinstance(caps, Capabilities), f"capabilities() returned {type(caps).__name__}"
        return caps

    @pytest.fixture(scope="class")
    @classmethod
    def hal_device(cls, hal_adapter: Adapter, hal_capabilities: Capabilities) -> torch.device:
        # capabilities first: a PrivateUse1 adapter may register its device type there.
        return torch.device(hal_adapter.device_type, hal_capabilities.index)

    # ---- identity and discovery (no hardware needed) --------------------------------------
    def test_adapter_declares_identity(self, hal_adapter: Adapter) -> None:
        for attribute in ("name", "device_type"):
            value = getattr(hal_adapter, attribute, None)
            assert isinstance(value, str) and value, f"adapter.{attribute} is {value!r}: set it"
        assert hal_adapter.name == hal_adapter.name.strip().lower(), (
            f"adapter name {hal_adapter.name!r} should be lower case without spaces "
            "(it is the entry point name and the KPT_ADAPTERS word)"
        )
        target = hal_adapter.triton_target()
        assert target is None or target in KNOWN_TRITON_TARGETS, (
            f"triton_target() returned {target!r}; expected None or one of "
            f"{sorted(KNOWN_TRITON_TARGETS)}"
        )

    def test_probe_explains_itself(self, hal_adapter: Adapter, hal_probe: Probe) -> None:
        assert hal_probe.count >= 0
        if hal_probe.count == 0:
            assert hal_probe.reason.strip(), (
                f"adapter {hal_adapter.name!r} found no device and said nothing about why; "
                "return Probe.none('what was missing', 'what was looked for')"
            )

    def test_discovery_reports_the_adapter(self, hal_adapter: Adapter, hal_probe: Probe) -> None:
        registry = Registry(entry_points=[], allow=[hal_adapter.name])
        registry.register(hal_adapter)
        infos = {info.name: info for info in registry.adapters()}
        info = infos[hal_adapter.name]
        if hal_probe.count == 0:
            assert info.status == "no-hardware", f"{info.status}: {info.reason}"
            assert info.reason, "discovery reports no reason for finding no hardware"
            return
        assert info.status == "loaded", f"discovery {info.status} the adapter: {info.reason}"
        assert "refused" not in info.reason, info.reason
        ours = [d for d in registry.devices() if d.adapter == hal_adapter.name]
        assert [d.index for d in ours] == list(range(hal_probe.count))
        assert all(d.torch_device.type == hal_adapter.device_type for d in ours)

    # ---- capabilities -------------------------------------------------------------------
    def test_capabilities_are_sane(self, hal_index: int, hal_capabilities: Capabilities) -> None:
        caps = hal_capabilities
        assert caps.index == hal_index, f"capabilities({hal_index}) describe index {caps.index}"
        assert caps.vendor and caps.model, f"vendor {caps.vendor!r} / model {caps.model!r} empty"
        assert caps.memory_total > 0, f"memory_total {caps.memory_total} must be > 0 bytes"
        assert 0 <= caps.memory_free <= caps.memory_total, (
            f"memory_free {caps.memory_free} outside [0, memory_total={caps.memory_total}]"
        )
        rates = dict(caps.peak_flops)
        if caps.memory_bandwidth is not None:
            rates["memory_bandwidth"] = caps.memory_bandwidth
        for what, value in rates.items():
            assert math.isfinite(value.amount) and value.amount > 0, f"{what}: {value} not > 0"
            assert value.unit, f"{what}: {value} has no unit"
        for link in caps.interconnect.links:
            assert link.bandwidth.amount > 0, f"link {link.kind}: {link.bandwidth} not > 0"
        assert caps.dtypes, "capabilities advertise no dtypes at all"

    def test_advertised_dtypes_round_trip(
        self, hal_device: torch.device, hal_capabilities: Capabilities
    ) -> None:
        broken = []
        for name in sorted(hal_capabilities.dtypes):
            dtype = torch_dtype(name)
            host = sample(dtype)
            try:
                back = host.to(hal_device).to("cpu")
            except Exception as exc:
                broken.append(f"{name}: copy to {hal_device} and back raised {exc!r}")
                continue
            if not same_bits(back, host):
                broken.append(f"{name}: values changed on the round trip")
        assert not broken, "advertised dtypes that do not work:\n  " + "\n  ".join(broken)

    def test_advertised_dtypes_compute(
        self, hal_device: torch.device, hal_capabilities: Capabilities
    ) -> None:
        broken = []
        for name in sorted(set(hal_capabilities.dtypes) - set(_FLOAT8)):
            dtype = torch_dtype(name)
            host = sample(dtype)
            expected = host | host if dtype == torch.bool else host + host
            try:
                on_device = host.to(hal_device)
                result = on_device | on_device if dtype == torch.bool else on_device + on_device
                result = result.to("cpu")
            except Exception as exc:
                broken.append(f"{name}: x + x on {hal_device} raised {exc!r}")
                continue
            if not same_bits(result, expected):
                broken.append(f"{name}: x + x differs from the CPU")
        assert not broken, "advertised dtypes that do not compute:\n  " + "\n  ".join(broken)

    # ---- numerics -----------------------------------------------------------------------
    def test_matmul_matches_cpu(
        self, hal_device: torch.device, hal_capabilities: Capabilities
    ) -> None:
        dtypes = [n for n in _MATMUL_DTYPES if n in hal_capabilities.dtypes]
        if not dtypes:
            pytest.skip(f"advertises none of {', '.join(_MATMUL_DTYPES)}")
        generator = torch.Generator().manual_seed(0)
        failures = []
        for name in dtypes:
            dtype = torch_dtype(name)
            a = torch.randn(64, 48, generator=generator).to(dtype)
            b = torch.randn(48, 32, generator=generator).to(dtype)
            expected = a.double() @ b.double()  # from the same rounded inputs
            actual = a.to(hal_device) @ b.to(hal_device)
            assert actual.dtype == dtype, f"{name} matmul returned {actual.dtype}"
            error, tolerance = relative_error(actual, expected), matmul_tolerance(dtype)
            if not error <= tolerance:
                failures.append(f"{name}: relative error {error:.3g} > {tolerance:.3g}")
        assert not failures, "matmul vs CPU float64:\n  " + "\n  ".join(failures)

    def test_mlp_forward_backward_matches_cpu(
        self, hal_device: torch.device, hal_capabilities: Capabilities
    ) -> None:
        if "float32" not in hal_capabilities.dtypes:
            pytest.skip("does not advertise float32")
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)
        )
        reference = copy.deepcopy(model).double()
        inputs = torch.randn(8, 16)
        on_device = model.to(hal_device)
        output = on_device(inputs.to(hal_device))
        output.square().mean().backward()
        expected = reference(inputs.double())
        expected.square().mean().backward()
        tolerance = matmul_tolerance(torch.float32)
        assert relative_error(output, expected) <= tolerance, "forward differs from CPU"
        for (name, param), ref in zip(
            on_device.named_parameters(), reference.parameters(), strict=True
        ):
            assert param.grad is not None, f"{name} got no gradient on {hal_device}"
            error = relative_error(param.grad, ref.grad)
            assert error <= tolerance, f"grad of {name}: relative error {error:.3g}"

    # ---- execution: streams, memory, errors ---------------------------------------------
    def test_streams_and_synchronize(self, hal_adapter: Adapter, hal_device: torch.device) -> None:
        hal_adapter.synchronize(hal_device.index)  # must not raise
        module = getattr(torch, hal_device.type, None)
        if module is None or not hasattr(module, "Stream") or not hasattr(module, "stream"):
            pytest.skip(f"torch.{hal_device.type} has no Stream/stream to test")
        try:
            stream = module.Stream(device=hal_device)
        except TypeError:  # torch.cpu.Stream takes no device
            stream = module.Stream()
        x = torch.arange(16, dtype=torch.float32).reshape(4, 4)
        on_device = x.to(hal_device)
        current = getattr(module, "current_stream", None)
        if current is not None and hasattr(stream, "wait_stream"):
            stream.wait_stream(current())  # the copy above was queued on the current stream
        with module.stream(stream):
            y = on_device @ on_device + 1
            event = module.Event() if hasattr(module, "Event") else None
            if event is not None:
                event.record()
        if event is not None:
            event.synchronize()
            assert event.query(), "event not complete after event.synchronize()"
        if hasattr(stream, "synchronize"):
            stream.synchronize()
        hal_adapter.synchronize(hal_device.index)
        assert torch.equal(y.to("cpu"), x @ x + 1), "work queued on a side stream came out wrong"

    def test_memory_accounting(
        self, hal_adapter: Adapter, hal_device: torch.device, hal_capabilities: Capabilities
    ) -> None:
        free, total = hal_adapter.memory_info(hal_device.index)
        assert isinstance(free, int) and isinstance(total, int), (free, total)
        assert 0 <= free <= total, f"memory_info: free {free} outside [0, total={total}]"
        assert abs(total - hal_capabilities.memory_total) <= 0.05 * total, (
            f"memory_info total {total} vs capabilities memory_total "
            f"{hal_capabilities.memory_total}: more than 5% apart"
        )
        module = getattr(torch, hal_device.type, None)
        allocated = getattr(module, "memory_allocated", None)
        if hal_device.type == "cpu" or allocated is None:
            return  # no per-device allocator counters to check
        size = 8 * 2**20
        before = allocated(hal_device)
        block = torch.empty(size, dtype=torch.uint8, device=hal_device)
        grown = allocated(hal_device) - before
        del block
        assert grown >= size, f"allocating {size} bytes grew memory_allocated by {grown}"

    def test_out_of_memory_is_catchable(
        self, hal_device: torch.device, hal_capabilities: Capabilities
    ) -> None:
        if hal_device.type == "cpu" and _overcommit_always():
            pytest.skip("vm.overcommit_memory=1: the host grants any allocation, no OOM to test")
        too_much = 4 * hal_capabilities.memory_total + 2**30
        with pytest.raises((torch.OutOfMemoryError, RuntimeError, MemoryError)) as caught:
            torch.empty(too_much, dtype=torch.uint8, device=hal_device)
        assert str(caught.value), "the out-of-memory error has no message"
        module = getattr(torch, hal_device.type, None)
        if hasattr(module, "empty_cache"):
            module.empty_cache()
        after = torch.ones(4, device=hal_device)  # the device must still work
        assert after.sum().item() == 4

    def test_health_report(self, hal_adapter: Adapter, hal_index: int) -> None:
        report = hal_adapter.health(hal_index)
        assert isinstance(report, HealthReport), f"health() returned {type(report).__name__}"
        assert report.state in tuple(HealthState)
        if report.state != HealthState.HEALTHY:
            assert report.reason, f"health is {report.state.value} without a reason"
        for key, value in report.readings.items():
            assert isinstance(value, int | float) and math.isfinite(value), (key, value)

    # ---- Triton and collectives ---------------------------------------------------------
    def test_triton_vector_add(
        self,
        hal_adapter: Adapter,
        hal_device: torch.device,
        hal_capabilities: Capabilities,
        record_property: Any,
    ) -> None:
        target = hal_adapter.triton_target()
        features = hal_capabilities.features
        if target is None and not features & {"triton", "triton-interpreter"}:
            pytest.skip(f"adapter {hal_adapter.name!r} advertises no Triton support")
        if not triton_available():
            pytest.skip("advertises Triton but triton is not installed (pip install triton)")
        from kpt.hal.testing._kernels import vector_add

        n = 1000
        x, y = torch.randn(n), torch.randn(n)
        out = torch.empty(n, device=hal_device)
        grid = (math.ceil(n / 256),)
        run = run_triton(
            vector_add, grid, x.to(hal_device), y.to(hal_device), out, n,
            BLOCK=256, device=hal_device, adapter=hal_adapter,
        )  # fmt: skip
        assert isinstance(run, TritonRun)
        record_property("triton_mode", run.mode)
        from triton.runtime.jit import JITFunction

        if target is not None and isinstance(vector_add, JITFunction):
            assert run.mode == "native", f"target {target!r} but the kernel ran {run.mode}"
        hal_adapter.synchronize(hal_device.index)
        assert torch.allclose(out.to("cpu"), x + y), "Triton vector add gave wrong values"

    def test_collectives_backend(self, hal_adapter: Adapter, hal_device: torch.device) -> None:
        import torch.distributed as dist

        name = hal_adapter.collectives_backend()
        if name is None:
            pytest.skip(f"adapter {hal_adapter.name!r} declares no collectives backend")
        assert isinstance(name, str) and name == name.lower(), f"backend name {name!r}"
        if not dist.is_available():
            pytest.skip("this torch is built without torch.distributed")
        if name in PLUGIN_COLLECTIVES and name not in dist.Backend.backend_list:
            pytest.skip(f"{name!r} is a plug-in backend not registered in this process")
        assert dist.is_backend_available(name), (
            f"adapter says collectives go through {name!r}, but "
            f"torch.distributed.is_backend_available({name!r}) is False"
        )
        if dist.is_initialized():
            return  # a process group exists already; do not disturb it
        _all_reduce_alone(name, hal_device)


def _all_reduce_alone(backend: str, device: torch.device) -> None:
    """A one-rank process group on `backend`: all_reduce must leave the tensor as it was."""
    import torch.distributed as dist

    dist.init_process_group(
        backend, store=dist.HashStore(), rank=0, world_size=1,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        tensor = torch.arange(4, dtype=torch.float32, device=device)
        dist.all_reduce(tensor)
        assert torch.equal(tensor.to("cpu"), torch.arange(4, dtype=torch.float32))
    finally:
        dist.destroy_process_group()


def _overcommit_always() -> bool:
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() == "1"
    except OSError:
        return False
