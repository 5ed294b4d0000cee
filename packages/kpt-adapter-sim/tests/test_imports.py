import kpt.adapters.sim as ks


def test_public_api_is_pinned():
    assert ks.__all__ == sorted(ks.__all__)
    assert set(ks.__all__) == {
        "DEVICE_TYPE", "KptSimDeviceLostError", "KptSimError", "KptSimHangError",
        "KptSimInvalidRequestError", "KptSimLinkDownError", "KptSimMemoryFaultError",
        "KptSimOutOfMemoryError", "SimFallbackWarning", "SimTensor", "__version__",
        "estimate_failure_report", "fallback_report", "reset_fallback_report", "shutdown",
    }  # fmt: skip


def test_executor_and_adapter_entry_points():
    from importlib.metadata import entry_points

    executors = {e.name: e.value for e in entry_points(group="kpt.sim.executors")}
    adapters = {e.name: e.value for e in entry_points(group="kpt.adapters")}
    assert executors["torch"] == "kpt.adapters.sim_executor:TorchExecutor"
    assert adapters["sim"] == "kpt.adapters.sim_hal:SimAdapter"
