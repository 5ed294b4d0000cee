"""An op whose result is sized by its arguments is checked before it runs (issue 10, defect 6):
a hostile client's arange(0, 2**40) into a 16-byte buffer must not make the daemon build it."""

from __future__ import annotations

import numpy as np
import pytest

from kpt.sim import InvalidRequestError, SimClient, TensorRef

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "op, args",
    [
        ("aten::arange.start", [0, 1 << 40]),
        ("aten::full.default", [[1 << 20, 1 << 20], 1.0]),
        ("aten::eye.default", [1 << 22]),
    ],
)
def test_a_result_larger_than_its_output_is_refused_before_computing(private_daemon, op, args):
    with private_daemon(executor="torch") as daemon, SimClient(daemon.endpoint) as c:
        out = TensorRef.contiguous(c.alloc(0, 16), "float32", (4,))
        c.launch(0, op, [], [out], attrs={"args": args})
        with pytest.raises(InvalidRequestError, match="refused before computing"):
            c.synchronize()
        small = TensorRef.contiguous(c.alloc(0, 16), "int64", (2,))
        c.launch(0, "aten::arange.start", [], [small], attrs={"args": [3, 5]})
        c.synchronize()
        assert c.read(small.buffer, 0, 16).view(np.int64).tolist() == [3, 4]
