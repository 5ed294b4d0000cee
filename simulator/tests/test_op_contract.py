"""The daemon's op contract is public: what a client needs to build launches (issue 13)."""

import pytest

import kpt.sim
from kpt.sim import DTYPE_SIZES, MAX_DIMS, MAX_TENSOR_REFS, InvalidRequestError, OpCost


def test_op_cost_round_trips_through_its_wire_form():
    cost = OpCost("matmul", 2.0 * 64 * 32 * 16, 4096.0, "bf16", (64, 16, 32))
    wire = cost.to_wire()
    assert wire == ["matmul", 65536.0, 4096.0, "bf16", [64, 16, 32]]
    assert OpCost.from_wire(wire) == cost
    assert OpCost.from_wire(["copy", 0, 8]) == OpCost("copy", 0.0, 8.0, "fp32", None)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (["matmul", -1.0, 0.0], "flops = -1.0 must be a finite number >= 0"),
        (["matmul", 1.0, float("inf")], "bytes = inf"),
        ("matmul", "must be [op_class, flops, bytes, dtype?, shape?]"),
    ],
)
def test_a_bad_wire_cost_is_refused_with_what_was_wrong(raw, says):
    with pytest.raises(InvalidRequestError, match=says.replace("[", r"\[").replace("?", r"\?")):
        OpCost.from_wire(raw, "aten::mm")


def test_the_dtype_table_limits_and_profile_spec_are_public():
    assert DTYPE_SIZES["bfloat16"] == 2 and DTYPE_SIZES["complex128"] == 16
    assert MAX_TENSOR_REFS >= 150 and MAX_DIMS >= 8  # CUDA's largest multi-tensor chunk
    assert kpt.sim.parse_profile_spec("h100-sxm:2,mi300x") == ["h100-sxm", "h100-sxm", "mi300x"]
    with pytest.raises(InvalidRequestError, match="positive integer"):
        kpt.sim.parse_profile_spec("h100-sxm:0")
