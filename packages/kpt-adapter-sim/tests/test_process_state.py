"""The client's process state is one RuntimeSlot; caches live in the Runtime it holds, and
torch's registrations in the one Registration the package keeps."""

import pytest

from kpt.adapters.sim import _device, _runtime
from kpt.adapters.sim._plan_cache import PlanCache


class FakeClient:
    def __init__(self) -> None:
        self.closed = False

    def devices(self) -> list[dict]:
        return [{"index": 0, "memory_total": 1 << 20}, {"index": 1, "memory_total": 1 << 20}]

    def close(self) -> None:
        self.closed = True


def test_a_fresh_slot_connects_once_and_seeds_every_device_from_a_pending_seed():
    seeds = []

    def connect(seed):
        seeds.append(seed)
        return _runtime.Runtime(client=FakeClient(), seed=seed)

    slot = _runtime.RuntimeSlot(connect)
    assert slot.runtime is None
    slot.pending_seed = 7
    first = slot.get()
    assert slot.get() is first and seeds == [7]  # connected once
    assert [state.seed for state in first.state.values()] == [7, 7]
    slot.shutdown()
    assert slot.runtime is None and first.client.closed
    second = slot.get()
    assert second is not first and seeds == [7, 7]
    slot.shutdown()


def test_each_runtime_owns_its_plan_cache_and_stream_numbers():
    one = _runtime.Runtime(client=FakeClient())
    two = _runtime.Runtime(client=FakeClient())
    assert isinstance(one.plans, PlanCache) and one.plans is not two.plans
    assert [one.streams.new(), one.streams.new(), two.streams.new()] == [1, 2, 1]


def test_plans_and_devices_are_kept_in_the_connected_runtime(sim):
    import torch

    x = torch.ones(3, device="kpt_sim")
    (x + x).cpu()
    plans = _runtime.runtime().plans
    assert plans.handlers[torch.ops.aten.add.Tensor] is not None
    assert any(key[0] is torch.ops.aten.add.Tensor for key in plans.plans)
    assert plans.devices[0] == torch.device("kpt_sim", 0)
    assert torch.kpt_sim.Stream().stream_id >= 1


def test_the_package_holds_the_one_registration(sim):
    assert isinstance(sim._registration, _device.Registration)
    with pytest.raises(RuntimeError, match="already registered"):
        _device.register()


def test_the_runtime_slot_is_the_client_packages_only_holder():
    assert isinstance(_runtime._slot, _runtime.RuntimeSlot)
    assert _runtime.current_runtime() is _runtime._slot.runtime
    assert not hasattr(_runtime, "pending_seed") and not hasattr(_runtime, "_lock")
