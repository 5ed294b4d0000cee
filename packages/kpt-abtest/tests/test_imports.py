import kpt.abtest


def test_public_names_are_pinned():
    assert sorted(kpt.abtest.__all__) == kpt.abtest.__all__
    assert kpt.abtest.__all__ == ["__version__"]
