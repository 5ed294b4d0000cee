"""The numpy executor and the executor plugin loader, without a daemon."""

import numpy as np
import pytest

from kpt.sim._executors import ExecutorNotFoundError, View, executor_names, load_executor
from kpt.sim._numpy_executor import NumpyExecutor


def _tensor(ex, array):
    storage = ex.allocate(array.nbytes + 16)
    ex.write(storage, 16, memoryview(np.ascontiguousarray(array).view(np.uint8).reshape(-1)))
    strides = tuple(s // array.itemsize for s in array.strides)
    return View(storage, 16, str(array.dtype), array.shape, strides)


def _empty(ex, shape, dtype="float32"):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    strides = tuple(s // np.dtype(dtype).itemsize for s in np.empty(shape, dtype).strides)
    return View(ex.allocate(nbytes), 0, dtype, tuple(shape), strides)


def _values(ex, view):
    data = ex.read(view.storage, view.offset, view.nbytes)
    return data.view(view.dtype).reshape(view.shape)


def test_numpy_is_registered_and_loads():
    assert "numpy" in executor_names()
    assert isinstance(load_executor("numpy"), NumpyExecutor)


def test_unknown_executor_names_the_registered_ones():
    with pytest.raises(ExecutorNotFoundError, match=r"'nope' not found.*numpy"):
        load_executor("nope")


@pytest.mark.parametrize(
    ("op", "fn"),
    [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("maximum", np.maximum)],
)
def test_binary_ops_match_numpy(op, fn):
    ex = NumpyExecutor()
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((3, 5)).astype(np.float32),
        rng.standard_normal((3, 5)).astype(np.float32),
    )
    out = _empty(ex, (3, 5))
    ex.run(op, [_tensor(ex, a), _tensor(ex, b)], [out], {})
    np.testing.assert_allclose(_values(ex, out), fn(a, b), rtol=1e-6)


def test_matmul_through_a_transposed_view():
    ex = NumpyExecutor()
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = _tensor(ex, a)
    transposed = view._replace(shape=(4, 3), strides=(1, 4))  # a.T without a copy
    out = _empty(ex, (4, 4))
    ex.run("matmul", [transposed, view], [out], {})
    np.testing.assert_allclose(_values(ex, out), a.T @ a)


def test_softmax_rows_sum_to_one_and_reductions_keep_dims():
    ex = NumpyExecutor()
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    out = _empty(ex, (4, 6))
    ex.run("softmax", [_tensor(ex, x)], [out], {"axis": -1})
    np.testing.assert_allclose(_values(ex, out).sum(axis=1), np.ones(4), rtol=1e-5)
    total = _empty(ex, (4, 1))
    ex.run("sum", [_tensor(ex, x)], [total], {"axis": 1, "keepdims": True})
    np.testing.assert_allclose(_values(ex, total), x.sum(axis=1, keepdims=True), rtol=1e-5)


def test_in_place_add_aliasing_input_and_output():
    ex = NumpyExecutor()
    x = _tensor(ex, np.ones(8, np.float32))
    ex.run("add", [x], [x], {"scalar": 2.0})
    ex.run("mul", [x, x], [x], {})
    np.testing.assert_array_equal(_values(ex, x), np.full(8, 9.0, np.float32))


def test_bfloat16_is_computed_in_float32_and_rounded_on_store():
    import ml_dtypes

    ex = NumpyExecutor()
    a = np.array([1.0, 2.0, 3.0], dtype=ml_dtypes.bfloat16)
    out = _empty(ex, (3,), "bfloat16")
    ex.run("mul", [_tensor(ex, a), _tensor(ex, a)], [out], {})
    got = ex.read(out.storage, 0, out.nbytes).view(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got, [1.0, 4.0, 9.0])


def test_bad_requests_raise_value_or_key_errors_naming_the_problem():
    ex = NumpyExecutor()
    a = _tensor(ex, np.ones((2, 3), np.float32))
    with pytest.raises(KeyError, match=r"'conv9d' is not implemented.*matmul"):
        ex.run("conv9d", [a], [a], {})
    with pytest.raises(ValueError, match=r"shape \[2, 2\] but output 0 has shape \[2, 3\]"):
        ex.run("matmul", [a, a._replace(shape=(3, 2), strides=(2, 1))], [a], {})
    with pytest.raises(ValueError, match="expects 2 input"):
        ex.run("add", [a], [a], {})


def test_estimate_counts_matmul_flops_from_shapes_without_storage():
    ex = NumpyExecutor()
    a = View(None, 0, "float32", (8, 16), (16, 1))
    b = View(None, 0, "float32", (16, 4), (4, 1))
    out = View(None, 0, "float32", (8, 4), (4, 1))
    cost = ex.estimate("matmul", [a, b], [out], {})
    assert cost.op_class == "matmul"
    assert cost.flops == 2 * 8 * 16 * 4
    assert cost.bytes == (8 * 16 + 16 * 4 + 8 * 4) * 4


def test_large_allocation_costs_no_resident_memory_until_touched():
    ex = NumpyExecutor()
    storage = ex.allocate(1 << 30)  # calloc'd: pages arrive on first touch
    assert storage.nbytes == 1 << 30
    del storage
