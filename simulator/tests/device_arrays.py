"""Numpy arrays to and from a daemon's device memory, for the daemon tests and soak clients."""

from __future__ import annotations

import numpy as np

from kpt.sim import SimClient, TensorRef


def upload(client: SimClient, device: int, array: np.ndarray) -> TensorRef:
    """A new buffer on ``device`` holding ``array``, as a contiguous tensor."""
    buffer = client.alloc(device, array.nbytes)
    client.write(buffer, 0, array)
    return TensorRef.contiguous(buffer, array.dtype.name, array.shape)


def download(client: SimClient, ref: TensorRef) -> np.ndarray:
    """The values of a contiguous tensor."""
    nbytes = int(np.prod(ref.shape)) * np.dtype(ref.dtype).itemsize
    return client.read(ref.buffer, ref.offset, nbytes).view(ref.dtype).reshape(ref.shape)


def empty(client: SimClient, device: int, shape, dtype: str = "float32") -> TensorRef:
    """A new, uninitialized-by-the-caller buffer (the daemon zeroes it) as a tensor."""
    buffer = client.alloc(device, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return TensorRef.contiguous(buffer, dtype, shape)
