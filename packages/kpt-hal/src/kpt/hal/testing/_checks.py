"""What the suite needs besides assertions: finding the adapter, sample data, tolerances."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
import torch

from kpt.hal._adapter import Adapter
from kpt.hal._discovery import ENTRY_POINT_GROUP, installed_entry_points

# Relative (Frobenius) error allowed for a small matmul against a float64 reference computed
# from the same rounded inputs: a few units in the last place of the output dtype.
_MATMUL_TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}
_TF32_TOLERANCE = 5e-3  # when the user allowed TF32 for float32 matmuls

# Backends torch.distributed does not ship but which plug-ins register under these names.
PLUGIN_COLLECTIVES = frozenset({"kpt", "ccl", "hccl"})
KNOWN_TRITON_TARGETS = frozenset({"cuda", "hip", "xpu"})


def matmul_tolerance(dtype: torch.dtype) -> float:
    """Relative error a conforming device may show for a small matmul in `dtype`."""
    if dtype == torch.float32 and (
        torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    ):
        return _TF32_TOLERANCE
    try:
        return _MATMUL_TOLERANCE[dtype]
    except KeyError:
        raise ValueError(
            f"no matmul tolerance for {dtype}; floating dtypes with one: "
            f"{', '.join(str(d) for d in _MATMUL_TOLERANCE)}"
        ) from None


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, both taken to float64 on the host."""
    actual = actual.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    scale = expected.norm().item() or 1.0
    return (actual - expected).norm().item() / scale


def torch_dtype(name: str) -> torch.dtype:
    """torch.float32 for "float32"; a clear failure for names torch does not know."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        pytest.fail(
            f"capabilities advertise dtype {name!r}, which is not a torch dtype name; "
            "use torch's names (float32, bfloat16, float8_e4m3fn, ...)"
        )
    return dtype


def sample(dtype: torch.dtype, count: int = 64) -> torch.Tensor:
    """`count` host values that every dtype represents exactly or nearly, and can double."""
    if dtype == torch.bool:
        return torch.arange(count) % 3 == 0
    if dtype.is_complex:
        real = torch.linspace(-4, 4, count)
        return torch.complex(real, real.flip(0)).to(dtype)
    if dtype.is_floating_point:
        return torch.linspace(-4, 4, count).to(dtype)
    low = 0 if dtype == torch.uint8 else -count // 2
    return torch.arange(low, low + count).to(dtype)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (works for float8 and NaNs, where == does not)."""
    a, b = a.contiguous(), b.contiguous()
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    )


def _load_by_name(name: str) -> Adapter:
    points = [ep for ep in installed_entry_points() if ep.name == name]
    if not points and name == "cpu":
        from kpt.hal._cpu import CpuAdapter

        return CpuAdapter()
    if not points:
        installed = ", ".join(sorted({ep.name for ep in installed_entry_points()})) or "none"
        pytest.fail(
            f"--kpt-adapter {name!r} not found: misspelled or not installed "
            f"(group {ENTRY_POINT_GROUP!r} has: {installed})",
            pytrace=False,
        )
    point: importlib.metadata.EntryPoint = points[0]
    try:
        loaded = point.load()
        adapter = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:
        pytest.fail(f"adapter {name!r} ({point.value}) failed to load: {exc!r}", pytrace=False)
    return adapter


def resolve_adapter(spec: Any, config: pytest.Config | None = None) -> Adapter:
    """The adapter under test: an Adapter instance, an Adapter class, or None for the name
    given on the command line (--kpt-adapter NAME)."""
    if spec is None:
        name = config.getoption("kpt_adapter", None) if config is not None else None
        if not name:
            pytest.skip(
                "no adapter chosen: run `pytest --kpt-adapter NAME --pyargs kpt.hal.testing`, "
                "or subclass AdapterConformance and set `adapter = YourAdapter`"
            )
        spec = _load_by_name(name)
    if isinstance(spec, type):
        try:
            spec = spec()
        except Exception as exc:
            pytest.fail(f"constructing {spec.__name__}() raised {exc!r}", pytrace=False)
    if not isinstance(spec, Adapter):
        pytest.fail(
            f"{spec!r} is a {type(spec).__name__}, not a kpt.hal.Adapter; "
            "set `adapter` to your Adapter subclass",
            pytrace=False,
        )
    return spec
