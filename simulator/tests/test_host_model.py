"""Host time per launch source ([host] in a profile): forward, backward, optimizer phases."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import kpt.sim
from kpt.sim import InvalidRequestError, OpCost, Simulator, load_profile
from kpt.sim._host_model import BACKWARD, FORWARD, OPTIMIZER, HostCosts, HostIssue, launch_source

US = 1e-6
COSTS = HostCosts(forward_s=10 * US, backward_s=20 * US, optimizer_launch_s=30 * US,
                  optimizer_tensor_s=1 * US)  # fmt: skip


def test_sources_follow_the_phases_of_a_training_step():
    host = HostIssue(COSTS)
    step = ["aten::mm.out", "aten::nll_loss_backward.grad_input", "aten::mm.out",
            "aten::_foreach_add_.List", "aten::_fused_adamw_.default", "aten::mm.out"]  # fmt: skip
    charged = [host.launch_s(name, 4) for name in step]
    assert charged == pytest.approx([10 * US, 20 * US, 20 * US, 34 * US, 34 * US, 10 * US])
    host.launch_s("aten::tanh_backward.grad_input", 2)
    assert host.phase == BACKWARD
    host.wait()
    assert host.phase == FORWARD
    assert launch_source("aten::_fused_sgd_.default") == OPTIMIZER


def test_a_profile_with_a_host_table_charges_each_launch_its_source():
    h200 = load_profile("h200")
    profile = dataclasses.replace(h200, host=COSTS)
    sim = Simulator(profile, trace=False)
    tiny = OpCost("elementwise", 1.0, 4.0)
    sim.launch(0, tiny, name="aten::add.out")
    sim.launch(0, tiny, name="aten::add_backward.out")
    sim.launch(0, tiny, name="aten::_foreach_mul_.Scalar", tensors=8)
    # The host issued the three launches back to back: 10 + 20 + (30 + 8) us.
    assert sim.devices[0].host_free == pytest.approx(68 * US)


def test_the_shipped_h200_names_its_host_and_bad_tables_are_refused():
    host = load_profile("h200").host
    assert host is not None and "h200" in host.machine and host.backward_s > host.forward_s
    with pytest.raises(InvalidRequestError, match="lacks"):
        HostCosts.from_table({"forward_us": 1.0}, "x.toml")
    with pytest.raises(InvalidRequestError, match="must be a number >= 0"):
        HostCosts.from_table({"forward_us": -1, "backward_us": 1, "optimizer_launch_us": 1,
                              "optimizer_tensor_us": 1}, "x.toml")  # fmt: skip


def test_classes_with_their_own_figure_cost_it_in_their_phase():
    table = {"forward_us": 10, "backward_us": 20, "optimizer_launch_us": 30,
             "optimizer_tensor_us": 1, "forward_class_us": {"batchnorm": 70},
             "backward_class_us": {"conv": 90, "batchnorm": 80}}  # fmt: skip
    host = HostIssue(HostCosts.from_table(table, "x.toml"))
    assert host.launch_s("aten::native_batch_norm.out", 5, "batchnorm") == pytest.approx(70 * US)
    assert host.launch_s("aten::relu.out", 1, "elementwise") == pytest.approx(10 * US)
    # backward: cuDNN's calls their own, any other class autograd's figure
    assert host.launch_s("aten::native_batch_norm_backward.out", 7, "batchnorm") == (
        pytest.approx(80 * US)
    )
    assert host.launch_s("aten::convolution_backward.out", 3, "conv") == pytest.approx(90 * US)
    assert host.launch_s("aten::threshold_backward.out", 2, "elementwise") == (
        pytest.approx(20 * US)
    )
    with pytest.raises(InvalidRequestError, match="backward_class_us"):
        HostCosts.from_table({**table, "backward_class_us": {"conv": -1}}, "x.toml")


def test_a_fused_rnn_launch_pays_its_library_per_call_and_per_step():
    costs = COSTS._replace(rnn_call_s=50 * US, rnn_step_s=2 * US)
    host = HostIssue(costs)
    # forward: the eager figure, plus 50 + 64 x 2 us of cuDNN's host loop
    assert host.launch_s("aten::mkldnn_rnn_layer.default", 9, "rnn", (64, 32, 512, 512, 4, 0)) == (
        pytest.approx((10 + 50 + 128) * US)
    )
    assert host.launch_s("aten::add.out", 2, "elementwise") == pytest.approx(10 * US)
    # its backward: the backward figure and, without a figure of its own, the same loop
    backward = (64, 32, 512, 512, 4, 1)
    assert host.launch_s("aten::_cudnn_rnn_backward", 9, "rnn", backward) == pytest.approx(
        (20 + 50 + 128) * US
    )
    # with one: cuDNN's backward issues its data and weight gradients each step
    host = HostIssue(costs._replace(rnn_backward_step_s=5 * US))
    assert host.launch_s("aten::_cudnn_rnn_backward", 9, "rnn", backward) == pytest.approx(
        (20 + 50 + 320) * US
    )
    # a bidirectional layer's library loops over both directions' steps: one set-up, 2 x 64 steps
    both = (64, 32, 512, 512, 3, 1, 2)
    assert host.launch_s("kpt::rnn_layer_backward.default", 9, "rnn", both) == pytest.approx(
        (20 + 50 + 640) * US
    )
    # launched a direction at a time (nn.LSTM's oneDNN op): each launch loops over its own
    each = (64, 32, 512, 512, 4, 1, 2, 1, 2)
    assert host.launch_s("aten::mkldnn_rnn_layer_backward", 9, "rnn", each) == pytest.approx(
        (20 + 50 + 320) * US
    )


def test_a_persistent_rnn_layer_pays_its_library_set_up_but_no_step_loop():
    costs = COSTS._replace(rnn_call_s=50 * US, rnn_step_s=2 * US)
    # the profile's [rnn] says which layers run every step in one kernel: Elman ones <= 256 wide
    host = HostIssue(costs, lambda gates, hidden: gates == 1 and hidden <= 256)
    narrow, wide = (64, 32, 256, 256, 1, 0), (64, 32, 512, 512, 1, 0)
    assert host.launch_s("kpt::rnn_layer.default", 4, "rnn", narrow) == pytest.approx(60 * US)
    assert host.launch_s("kpt::rnn_layer.default", 4, "rnn", wide) == pytest.approx(188 * US)


def test_ops_that_launch_nothing_are_charged_before_the_next_launch():
    costs = COSTS._replace(host_op_s=3 * US)
    host = HostIssue(costs)
    # 4 views dispatched before an eager add: 10 + 4 x 3 us; before an optimizer launch too
    assert host.launch_s("aten::add.out", 2, "elementwise", None, 4) == pytest.approx(22 * US)
    assert host.launch_s("aten::_foreach_add_.List", 2, "", None, 1) == pytest.approx(35 * US)
    assert HostIssue(COSTS).launch_s("aten::add.out", 2, "", None, 4) == pytest.approx(10 * US)
    table = {"forward_us": 1, "backward_us": 1, "optimizer_launch_us": 1,
             "optimizer_tensor_us": 1}  # fmt: skip
    assert HostCosts.from_table({**table, "host_op_us": 2.5}, "x.toml").host_op_s == 2.5 * US
    with pytest.raises(InvalidRequestError, match="host_op_us"):
        HostCosts.from_table({**table, "host_op_us": "fast"}, "x.toml")


def test_a_trace_replays_each_launch_with_its_host_ops(tmp_path):
    """A recorded launch's host_ops are charged on replay, by a profile's host_op_us; a bad
    count is refused by name."""
    from kpt.sim import replay

    profile = tmp_path / "host-ops.toml"
    base = (Path(kpt.sim.__file__).parent / "profiles/h200.toml").read_text()
    base = re.sub(r"(?m)^host_op_us = .*\n", "", base)  # the shipped figure, if any
    profile.write_text(base.replace("[host]", "[host]\nhost_op_us = 5.0", 1))
    launch = {"op": "launch", "device": 0, "class": "elementwise", "flops": 1.0, "bytes": 4.0,
              "name": "aten::add.out"}  # fmt: skip
    trace = {"format": "kpt-sim-ops", "version": 1, "profile": "h200", "devices": 1,
             "ops": [dict(launch, host_ops=100), {"op": "sync"}]}  # fmt: skip
    plain = dict(trace, ops=[launch, {"op": "sync"}])
    gained = replay(trace, profile=str(profile))["predicted_s"]
    assert gained - replay(plain, profile=str(profile))["predicted_s"] == pytest.approx(500 * US)
    with pytest.raises(InvalidRequestError, match="host_ops"):
        replay(dict(trace, ops=[dict(launch, host_ops=-1)]), profile=str(profile))
