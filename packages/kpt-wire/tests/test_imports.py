import kpt.wire


def test_public_names_are_pinned():
    assert sorted(kpt.wire.__all__) == kpt.wire.__all__
    assert kpt.wire.__all__ == ["__version__"]
