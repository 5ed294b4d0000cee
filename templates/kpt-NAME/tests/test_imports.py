import kpt.NAME


def test_public_names_are_pinned():
    assert sorted(kpt.NAME.__all__) == kpt.NAME.__all__
    assert kpt.NAME.__all__ == ["__version__"]
