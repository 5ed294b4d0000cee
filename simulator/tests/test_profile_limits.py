"""A profile file is refused at load, naming what is wrong, before a simulator uses it."""

import re
from importlib import resources

import pytest

import kpt.sim
from kpt.sim import InvalidRequestError, load_profile


def _shipped_text() -> str:
    return (resources.files("kpt.sim") / "profiles" / "test-asic.toml").read_text()


def test_a_binary_file_is_refused_as_not_text(tmp_path):
    path = tmp_path / "chip.toml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InvalidRequestError, match=r"chip\.toml.* is not a text \(TOML\) file"):
        load_profile(str(path))


@pytest.mark.parametrize(
    ("pattern", "field"),
    [(r"capacity_gib\s*=.*", "hbm.capacity_gib"), (r"cache_mib\s*=.*", "cache_mib")],
)
def test_a_memory_size_beyond_64_bits_is_refused_by_name(tmp_path, pattern, field):
    path = tmp_path / "huge.toml"
    path.write_text(re.sub(pattern, f"{field.split('.')[-1]} = 1e30", _shipped_text(), count=1))
    with pytest.raises(InvalidRequestError, match=rf"field '{re.escape(field)}' = 1e\+30 is too"):
        kpt.sim.Simulator(str(path))


def test_a_large_but_real_memory_still_loads(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(re.sub(r"capacity_gib\s*=.*", "capacity_gib = 4096", _shipped_text(), count=1))
    assert load_profile(str(path)).hbm_bytes == 4096 << 30
