import importlib.util
import sys

import kpt.sim


def test_public_names_are_sorted_and_include_the_engine():
    assert sorted(kpt.sim.__all__) == kpt.sim.__all__
    engine = {
        "CollectiveResult", "DeviceHangError", "DeviceLostError", "Fault", "InvalidRequestError",
        "LinkDownError", "MemoryFaultError", "OpCost", "OutOfMemoryError", "Profile", "SimError",
        "Simulator", "__version__", "closed_form", "efficiency", "load_faults", "load_profile",
        "op_time", "op_timing", "profile_from_dict", "profile_table", "profiles", "replay",
        "ring_all_reduce_time",
        "shape_penalty", "transfer_time", "tree_all_reduce_time",
        "Datasheet", "Interval", "StreamEngine", "derive_profile", "interval",
    }  # fmt: skip
    assert engine <= set(kpt.sim.__all__)
    for name in kpt.sim.__all__:
        assert hasattr(kpt.sim, name), name


def test_kpt_stays_a_namespace_and_torch_free():
    assert importlib.util.find_spec("kpt.__init__") is None
    assert "torch" not in sys.modules
