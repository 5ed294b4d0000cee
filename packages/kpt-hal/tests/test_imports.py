import kpt.hal


def test_public_names_are_pinned():
    assert sorted(kpt.hal.__all__) == kpt.hal.__all__
    expected = [
        "ALLOW_LIST_ENV",
        "Adapter",
        "AdapterInfo",
        "Capabilities",
        "CpuAdapter",
        "Device",
        "ENTRY_POINT_GROUP",
        "HealthMonitor",
        "HealthReport",
        "HealthState",
        "HostKernelRun",
        "Interconnect",
        "Link",
        "MeshPlan",
        "NoDeviceError",
        "NominalSpec",
        "PrivateUse1TakenError",
        "Probe",
        "Registry",
        "Telemetry",
        "TorchDeviceAdapter",
        "TritonRun",
        "TritonUnavailableError",
        "Value",
        "__version__",
        "adapters",
        "device",
        "devices",
        "health",
        "nominal_spec",
        "plan_mesh",
        "refresh",
        "register_adapter",
        "register_python_device",
        "registry",
        "run_triton",
        "select",
        "unregister_adapter",
    ]
    assert kpt.hal.__all__ == expected
    for name in kpt.hal.__all__:
        assert hasattr(kpt.hal, name), name


def test_kpt_is_a_namespace_package():
    import kpt

    assert not hasattr(kpt, "__file__") or kpt.__file__ is None
