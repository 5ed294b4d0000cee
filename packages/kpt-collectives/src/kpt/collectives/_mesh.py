"""init_device_mesh for every device kpt knows, kpt_sim included.

torch's ``init_device_mesh`` refuses device types that are not all letters ("kpt_sim" has an
underscore; it guards against "cuda:0"). This builds the same mesh: one rank per position of
``mesh_shape`` in order, as torch's does, through DeviceMesh's own constructor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.device_mesh import init_device_mesh as _torch_init_device_mesh


def init_device_mesh(
    device_type: str,
    mesh_shape: Sequence[int],
    *,
    mesh_dim_names: Sequence[str] | None = None,
) -> DeviceMesh:
    """``torch.distributed.device_mesh.init_device_mesh`` that also takes "kpt_sim"."""
    if device_type.isalpha():
        return _torch_init_device_mesh(device_type, tuple(mesh_shape),
                                       mesh_dim_names=mesh_dim_names)  # fmt: skip
    if ":" in device_type:
        raise ValueError(
            f"init_device_mesh: device type {device_type!r} has an index; pass the type alone "
            f"({device_type.split(':')[0]!r}): each rank uses its current device"
        )
    ranks = torch.arange(math.prod(mesh_shape), dtype=torch.int).view(tuple(mesh_shape))
    names = None if mesh_dim_names is None else tuple(mesh_dim_names)
    return DeviceMesh(device_type, ranks, mesh_dim_names=names)
