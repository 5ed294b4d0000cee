import kpt.serve


def test_public_names_are_pinned():
    assert kpt.serve.__all__ == [
        "LLM",
        "Engine",
        "EngineConfig",
        "EngineStats",
        "ModelConfig",
        "OutputKind",
        "RequestOutput",
        "SamplingParams",
        "__version__",
        "load_config",
    ]


def test_fleet_public_names_include_its_network():
    import kpt.serve.fleet as fleet

    for name in ("Fleet", "FleetKeys", "FleetNetwork", "Router", "Worker", "WorkerSpec"):
        assert name in fleet.__all__ and hasattr(fleet, name), name
