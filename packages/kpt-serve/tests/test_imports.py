import kpt.serve


def test_public_names_are_pinned():
    assert sorted(kpt.serve.__all__) == kpt.serve.__all__
    assert kpt.serve.__all__ == ["__version__"]
