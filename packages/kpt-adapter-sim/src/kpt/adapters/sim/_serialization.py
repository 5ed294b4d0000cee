"""torch.load(..., map_location="kpt_sim"): checkpoint storages restored as host bytes first.

kpt_sim tensors have no torch storage, so torch.load's default for a PrivateUse1 location (make
an UntypedStorage on the device and copy into it) has nothing to allocate with and crashes the
interpreter. Registered ahead of it, ``restore_location`` keeps a storage's bytes on the host
in a ``HostBytesStorage`` that reports the kpt_sim device; torch's ``_rebuild_tensor`` then makes
an empty kpt_sim tensor and ``set_``s it to that storage, which ``adopt_host_storage`` turns into
an upload. Files saved on kpt_sim hold CPU tensors plus
``torch._utils._rebuild_device_tensor_from_cpu_tensor`` (see SimTensor.__reduce_ex__), so they
take the same path and then move to the requested device.

Each tensor restored this way gets its own device buffer: tensors that shared one storage in
the file (tied weights) are no longer views of each other, as with map_location="meta".
"""

from __future__ import annotations

import re
from typing import Any

import torch

from kpt.adapters.sim._tensor import DEVICE_TYPE, SimTensor

# Below torch's own PrivateUse1 entry (23), so this one answers kpt_sim locations first.
PRIORITY = 15
_LOCATION = re.compile(rf"{DEVICE_TYPE}(:\d+)?")
_PYTHON_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.Python)


class HostBytesStorage(torch.UntypedStorage):
    """A CPU storage that torch.load's rebuild functions see as a kpt_sim one."""

    kpt_sim_device: torch.device

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.kpt_sim_device


def _never_tag(obj: Any) -> None:
    return None  # kpt_sim tensors are saved through the CPU; no storage is tagged kpt_sim


def restore_location(storage: Any, location: str) -> Any:
    """torch.serialization deserializer: CPU bytes for a kpt_sim location, else not ours."""
    if not _LOCATION.fullmatch(location):
        return None
    target = torch.device(location)
    restored = HostBytesStorage(storage.nbytes())
    restored.copy_(storage)
    restored.kpt_sim_device = target
    return restored


def adopt_host_storage(func: Any, args: tuple, kwargs: dict) -> SimTensor:
    """aten.set_(kpt_sim tensor, storage, offset, size, stride): upload the storage's view and
    make the tensor that upload (same object, as an in-place op must return)."""
    tensor, storage, view = args[0], args[1], args[2:]  # view: (offset, size[, stride])
    if storage.device.type != "cpu" and not isinstance(storage, HostBytesStorage):
        raise RuntimeError(
            f"kpt_sim: set_ with a {storage.device} storage is not supported; kpt_sim tensors "
            "have no torch storage (only checkpoint storages restored by torch.load are adopted)"
        )
    host = torch.empty(0, dtype=tensor.dtype).set_(storage, *view)
    moved = host.to(tensor.device)
    with torch._C._ExcludeDispatchKeyGuard(_PYTHON_KEY):
        tensor.data = moved  # shallow copy of sizes and strides into the same Python object
    tensor._sim = moved._sim
    return tensor


def register() -> None:
    torch.serialization.register_package(PRIORITY, _never_tag, restore_location)
