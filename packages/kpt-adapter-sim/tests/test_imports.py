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


def test_the_daemon_half_and_the_hal_half_load_without_the_client():
    """The executor (what the daemon loads) and the kpt.hal adapter never import
    kpt.adapters.sim, whose import registers the device (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from kpt.sim import load_executor\n"
        "import kpt.adapters.sim_hal, kpt.adapters.sim_executor\n"
        "executor = load_executor('torch')\n"
        "assert type(executor).__module__.startswith('kpt.adapters.sim_executor')\n"
        "assert 'kpt.adapters.sim' not in sys.modules, 'the client was imported'\n"
        "assert torch._C._get_privateuse1_backend_name() == 'privateuseone'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
