"""Collectives through the daemon: values as torch.distributed defines them, time from links."""

from __future__ import annotations

import numpy as np
import pytest

from kpt.sim import InvalidRequestError, SimClient, TensorRef
from kpt.sim._daemon_thread import serve_in_thread

RANKS = 4


@pytest.fixture
def client():
    with serve_in_thread("test-asic", RANKS, heartbeat_interval=0.2) as (endpoint, _):
        c = SimClient(endpoint, heartbeat_interval=0.2)
        yield c
        c.close()


def upload(c, device, array):
    buffer = c.alloc(device, array.nbytes)
    c.write(buffer, 0, array)
    return TensorRef.contiguous(buffer, str(array.dtype), array.shape)


def empty(c, device, shape, dtype="float32"):
    return TensorRef.contiguous(c.alloc(device, 4 * int(np.prod(shape))), dtype, shape)


def values(c, ref):
    nbytes = int(np.prod(ref.shape)) * np.dtype(ref.dtype).itemsize
    return c.read(ref.buffer, 0, nbytes).view(ref.dtype).reshape(ref.shape)


def rank_data(size=8):
    return [np.arange(size, dtype=np.float32) * (r + 1) for r in range(RANKS)]


def test_all_reduce_in_place_sums_every_rank_and_takes_simulated_time(client):
    data = rank_data()
    tensors = [upload(client, r, data[r]) for r in range(RANKS)]
    before = client.synchronize()
    client.collective("all_reduce", tensors)
    assert client.synchronize() > before
    for ref in tensors:
        np.testing.assert_array_equal(values(client, ref), sum(data))


def test_all_reduce_max_into_separate_outputs(client):
    data = rank_data()
    inputs = [upload(client, r, data[r]) for r in range(RANKS)]
    outputs = [empty(client, r, (8,)) for r in range(RANKS)]
    client.collective("all_reduce", inputs, outputs, op="max")
    for r in range(RANKS):
        np.testing.assert_array_equal(values(client, outputs[r]), data[-1])
        np.testing.assert_array_equal(values(client, inputs[r]), data[r])


def test_premul_sum_scales_each_input_by_its_factor(client):
    data = rank_data()
    inputs = [upload(client, r, data[r]) for r in range(RANKS)]
    outputs = [empty(client, r, (8,)) for r in range(RANKS)]
    factors = [0.125, 0.375, 0.25, 0.25]
    client.collective("all_reduce", inputs, outputs, op="premul_sum", factors=factors)
    for ref in outputs:
        np.testing.assert_allclose(values(client, ref), sum(f * d for f, d in zip(factors, data)))
    client.collective("all_reduce", inputs, outputs, op="premul_sum", factors=factors[:2])
    with pytest.raises(InvalidRequestError, match="premul_sum: give 4 finite factor"):
        client.synchronize()


def test_broadcast_copies_the_root_to_every_rank(client):
    data = rank_data()
    tensors = [upload(client, r, data[r]) for r in range(RANKS)]
    client.collective("broadcast", tensors, root=2)
    for ref in tensors:
        np.testing.assert_array_equal(values(client, ref), data[2])


def test_all_gather_reduce_scatter_and_all_to_all(client):
    data = rank_data()
    inputs = [upload(client, r, data[r]) for r in range(RANKS)]
    gathered = [empty(client, r, (8 * RANKS,)) for r in range(RANKS)]
    client.collective("all_gather", inputs, gathered)
    scattered = [empty(client, r, (8 // RANKS,)) for r in range(RANKS)]
    client.collective("reduce_scatter", inputs, scattered)
    exchanged = [empty(client, r, (8,)) for r in range(RANKS)]
    client.collective("all_to_all", inputs, exchanged)
    total = sum(data)
    chunk = 8 // RANKS
    for r in range(RANKS):
        np.testing.assert_array_equal(values(client, gathered[r]), np.concatenate(data))
        np.testing.assert_array_equal(
            values(client, scattered[r]), total[r * chunk : (r + 1) * chunk]
        )
        expected = np.concatenate([data[j][r * chunk : (r + 1) * chunk] for j in range(RANKS)])
        np.testing.assert_array_equal(values(client, exchanged[r]), expected)


def test_send_recv_moves_one_tensor(client):
    src = upload(client, 0, np.arange(8, dtype=np.float32))
    dst = empty(client, 3, (8,))
    client.collective("send_recv", [src], [dst])
    np.testing.assert_array_equal(values(client, dst), np.arange(8, dtype=np.float32))


def test_bad_collectives_are_refused_with_reasons(client):
    a = upload(client, 0, np.ones(8, np.float32))
    b = upload(client, 1, np.ones(4, np.float32))
    client.collective("all_reduce", [a, b])
    with pytest.raises(InvalidRequestError, match="inputs differ in size"):
        client.synchronize()
    client.collective("all_shuffle", [a])
    with pytest.raises(InvalidRequestError, match="all_shuffle"):
        client.synchronize()
    c = upload(client, 0, np.ones(8, np.float32))
    client.collective("all_reduce", [a, c])
    with pytest.raises(InvalidRequestError, match="repeat"):
        client.synchronize()
