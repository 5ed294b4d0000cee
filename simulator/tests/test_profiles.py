import tomllib
from importlib import resources

import pytest

import kpt.sim
from kpt.sim import InvalidRequestError, load_profile
from kpt.sim._profiles import profile_from_dict


def _raw(name="test-asic"):
    return tomllib.loads((resources.files("kpt.sim") / "profiles" / f"{name}.toml").read_text())


def test_shipped_profiles_load_and_validate():
    names = kpt.sim.profiles()
    assert {"h100-sxm", "mi300x", "gaudi3", "test-asic"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.hbm_bytes > 0 and p.peak_flops["matrix"]["bf16"] > 0
        assert "default" in p.efficiency
    rows = kpt.sim.profile_table()
    assert [r["profile"] for r in rows] == names


def test_datasheet_figures_in_si_units():
    p = load_profile("mi300x")  # datasheet numbers, not calibrated
    assert p.vendor == "AMD" and p.calibrated is False
    assert p.hbm_bytes == 192 * 2**30
    assert p.peak_flops["matrix"]["bf16"] == pytest.approx(1307.4e12)
    assert p.hbm_bandwidth == pytest.approx(5.3e12)
    assert p.kernel_launch_s == pytest.approx(5e-6)
    h100 = load_profile("h100-sxm")  # may be calibrated: only what a fit cannot change
    assert h100.vendor == "NVIDIA" and h100.hbm_bytes == 80 * 2**30


def test_unknown_profile_lists_shipped_ones():
    message = r"'h100' not found; shipped profiles: .*h100-sxm"
    with pytest.raises(InvalidRequestError, match=message):
        load_profile("h100")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("hbm", "bandwidth_gbps"), -1, "hbm.bandwidth_gbps.*-1"),
        (("peak_tflops", "matrix", "bf16"), "fast", "peak_tflops.matrix.bf16.*'fast'"),
        (("efficiency", "default", "compute_e_max"), 1.5, "compute_e_max.*1.5"),
        (("dma", "engines"), 0, "dma.engines.*0"),
        (("schema",), 2, "schema.*2"),
    ],
)
def test_bad_fields_are_named_with_their_value(path, value, message):
    data = _raw()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(InvalidRequestError, match=message):
        profile_from_dict("broken", data)


def test_missing_field_is_named():
    data = _raw()
    del data["host_link"]["latency_us"]
    with pytest.raises(InvalidRequestError, match=r"missing field 'host_link\.latency_us'"):
        profile_from_dict("broken", data)


@pytest.mark.parametrize(
    ("table", "key", "named"),
    [(None, "launch_us", "'launch_us'"), ("hbm", "bandwith_gbps", "'hbm.bandwith_gbps'"),
     ("network", "nics", "'network.nics'")],
)  # fmt: skip
def test_misspelled_fields_are_refused_by_name(table, key, named):
    data = _raw()
    (data if table is None else data[table])[key] = 1
    with pytest.raises(InvalidRequestError, match=f"unknown field.*{named}"):
        profile_from_dict("typo", data)


def test_profile_from_a_file(tmp_path):
    text = (resources.files("kpt.sim") / "profiles" / "test-asic.toml").read_text()
    path = tmp_path / "my-chip.toml"
    path.write_text(text.replace("bandwidth_gbps = 100", "bandwidth_gbps = 200"))
    assert load_profile(str(path)).hbm_bandwidth == pytest.approx(200e9)


def test_mixed_cluster_spec():
    sim = kpt.sim.Simulator("h100-sxm:2,mi300x:1")
    assert [d["profile"] for d in sim.device_info()] == ["h100-sxm", "h100-sxm", "mi300x"]
    with pytest.raises(InvalidRequestError, match="count 'x'"):
        kpt.sim.Simulator("h100-sxm:x")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tile_size": 8}, r"unknown field\(s\) \['tile_size'\]"),
        ({"fixed_us": {"fp33": 1.0}}, r"fixed_us has unknown dtype\(s\) \['fp33'\]"),
        ({"fixed_us": {"fp32": -1.0}}, r"fixed_us\.fp32.*-1"),
        ({"misaligned_tflops": "slow"}, r"misaligned_tflops.*'slow'"),
        ({"channel_align": 0}, r"channel_align.*0.*>= 1"),
        ({"load_round_us": -1}, r"load_round_us.*-1"),
        ({"grouped_tflops": -1}, r"grouped_tflops.*-1"),
        ({"row_stream_gbps": "fast"}, r"row_stream_gbps.*'fast'"),
        ({"warp_row_gbps": "fast"}, r"warp_row_gbps.*'fast'"),
        ({"short_row_tflops": "fast"}, r"short_row_tflops.*'fast'"),
        ({"fp32": {"tile_size": 8}}, r"matmul\.fp32 has unknown field\(s\) \['tile_size'\]"),
        ({"fp32": {"class_tflops": -1}}, r"matmul\.fp32\.class_tflops.*-1"),
        ({"fp32": {"bf16": {"tile": 8}}}, r"matmul\.fp32 holds a dtype table"),
    ],
)
def test_bad_refinement_fields_are_named(extra, message):
    data = _raw()
    data["efficiency"]["matmul"] = {**data["efficiency"]["default"], **extra}
    with pytest.raises(InvalidRequestError, match=message):
        profile_from_dict("broken", data)


def test_refinements_load_in_si_units():
    h100 = load_profile("h100-sxm")
    mm = h100.efficiency_for("matmul")
    assert (
        0 < mm.fixed_s["fp32"] < 50e-6
        and 1e12 < mm.misaligned_flops < h100.peak_flops["matrix"]["bf16"]
    )
    assert h100.efficiency_for("layernorm") is h100.efficiency["layernorm"]
    assert h100.efficiency_for("rmsnorm") is h100.efficiency["rmsnorm"]  # its own since r2
    assert 0 < h100.pageable_bandwidth < h100.host_link_bandwidth
    mi300x = load_profile("mi300x")  # no norm table: softmax falls through to default
    assert mi300x.efficiency_for("rmsnorm") is mi300x.efficiency_for("norm")  # its parent
    assert mi300x.pageable_bandwidth == 0  # not measured: the pinned link is used
    assert mi300x.efficiency_for("softmax") is mi300x.efficiency_for("norm")


def test_pageable_host_link_must_be_positive():
    data = _raw()
    data["host_link"] = {**data["host_link"], "pageable_bandwidth_gbps": 0,
                         "pageable_latency_us": 10}  # fmt: skip
    with pytest.raises(InvalidRequestError, match=r"pageable_bandwidth_gbps.*0.*> 0"):
        profile_from_dict("broken", data)
