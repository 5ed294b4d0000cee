import kpt.serve


def test_public_names_are_pinned():
    assert sorted(kpt.serve.__all__, key=str.lower) == sorted(kpt.serve.__all__, key=str.lower)
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
