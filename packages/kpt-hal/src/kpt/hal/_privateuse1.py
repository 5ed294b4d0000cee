"""Register a Python-implemented device in torch's single PrivateUse1 slot.

torch has exactly one PrivateUse1 dispatch key per process. This helper wraps torch's
experimental ``_setup_privateuseone_for_python_backend`` so that a second backend asking for the
slot gets a clear error naming the first one, instead of silently renaming nothing.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch

_DEFAULT_NAME = "privateuseone"
_lock = threading.Lock()
# name -> who registered it (module of the caller), kept so a refusal can name the owner.
_registered: dict[str, str] = {}


class PrivateUse1TakenError(RuntimeError):
    """The process's PrivateUse1 slot already holds another backend."""


class _DefaultHooks(torch._C._acc.PrivateUse1Hooks):
    def is_available(self) -> bool:
        return True

    def has_primary_context(self, dev_id: int) -> bool:
        return True

    def is_built(self) -> bool:
        return True


class _DefaultGuard(torch._C._acc.DeviceGuard):
    def type_(self) -> Any:
        return torch._C._autograd.DeviceType.PrivateUse1


def privateuse1_owner() -> tuple[str, str] | None:
    """(backend name, registrant) of the PrivateUse1 slot, or None while it is free."""
    name = torch._C._get_privateuse1_backend_name()
    if name == _DEFAULT_NAME:
        return None
    return name, _registered.get(name, "code outside kpt (torch.utils.rename_privateuse1_backend)")


def _caller_module() -> str:
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        return caller.f_globals.get("__name__", "<unknown>") if caller else "<unknown>"
    finally:
        del frame


def register_python_device(
    name: str,
    module: Any,
    hooks: Any | None = None,
    guard: Any | None = None,
    *,
    install_hooks: Callable[[], bool] | None = None,
) -> None:
    """Make ``torch.device(name)`` a device whose ops and module are written in Python.

    Idempotent for the same name; raises PrivateUse1TakenError when another backend holds the slot.
    ``module`` becomes ``torch.<name>`` (is_available, device_count, synchronize, ...).
    torch takes one PrivateUse1 hooks registration per process: ``install_hooks`` registers
    the backend's own (C++ hooks give pinned memory, which Python hooks cannot) and returns
    True, or returns False to get ``hooks`` (default: available, built, with a context).
    """
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(
            f"device name {name!r} is not usable: pass a lower-case identifier such as 'kpt_sim'"
        )
    if name in {"cpu", "cuda", "meta", "xpu", "mps", "hip", "mtia", _DEFAULT_NAME}:
        raise ValueError(f"device name {name!r} is a built-in torch device; choose another name")
    with _lock:
        owner = privateuse1_owner()
        if owner is not None:
            taken, registrant = owner
            if taken != name:
                raise PrivateUse1TakenError(
                    f"PrivateUse1 is already {taken!r}, registered by {registrant}; torch allows "
                    f"one PrivateUse1 backend per process, so {name!r} cannot be added: use "
                    f"{taken!r} or run {name!r} in another process"
                )
            return  # same backend asked twice: nothing to do
        registrant = _caller_module()
        torch.utils.rename_privateuse1_backend(name)
        torch.utils.generate_methods_for_privateuse1_backend(
            for_tensor=True, for_module=True, for_packed_sequence=True, for_storage=False
        )
        torch._register_device_module(name, module)
        if install_hooks is None or not install_hooks():
            torch._C._acc.register_python_privateuseone_hook(hooks if hooks else _DefaultHooks())
        torch._C._acc.register_python_privateuseone_device_guard(
            guard if guard else _DefaultGuard()
        )
        _registered[name] = registrant
