import kpt.hal


def test_public_names_are_pinned():
    assert sorted(kpt.hal.__all__) == kpt.hal.__all__
    assert kpt.hal.__all__ == ["__version__"]
