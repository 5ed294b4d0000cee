"""KLL sketch rank-error bound, and Summary merges that equal one pass over all the data."""

import msgpack
import numpy as np
import pytest

import kpt.abtest as ab

QS = np.linspace(0.01, 0.99, 99)


def _rank_error(sketch, data):
    truth = np.sort(data)
    ranks = np.searchsorted(truth, sketch.quantile(QS), side="right") / truth.size
    return float(np.abs(ranks - QS).max())


@pytest.mark.parametrize("stream", ["random", "sorted", "reversed", "ties"])
def test_rank_error_within_stated_bound(stream):
    rng = np.random.default_rng(31)
    bound = ab.rank_error_bound(200)
    assert 0.01 < bound < 0.02
    worst = 0.0
    for trial in range(8):
        data = {
            "random": rng.lognormal(size=50_000),
            "sorted": np.arange(50_000.0),
            "reversed": np.arange(50_000.0)[::-1],
            "ties": rng.integers(0, 1000, 50_000).astype(float),
        }[stream]
        sketch = ab.QuantileSketch(200, seed=trial)
        for chunk in np.array_split(data, 500):  # streaming, as workers see it
            sketch.update(chunk)
        worst = max(worst, _rank_error(sketch, data))
        assert sum(level.size for level in sketch.levels) < 3 * 200
    assert worst <= bound


def test_merging_many_workers_matches_one_pass():
    rng = np.random.default_rng(32)
    parts = [rng.lognormal(size=rng.integers(1, 400)) for _ in range(300)]
    data = np.concatenate(parts)
    workers = [ab.Summary(seed=i).update(p) for i, p in enumerate(parts)]
    wire = [msgpack.unpackb(msgpack.packb(w.to_dict())) for w in workers]
    merged = ab.Summary(seed=0).merge_all(ab.Summary.from_dict(d) for d in wire)
    assert merged.n == data.size
    assert merged.mean == pytest.approx(data.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(data.var(ddof=1), rel=1e-10)
    assert (merged.min, merged.max) == (data.min(), data.max())
    assert _rank_error(merged.sketch, data) <= ab.rank_error_bound(200)
    pairwise = ab.Summary(seed=1)
    for w in workers[:50]:
        pairwise.merge(w)
    assert pairwise.variance == pytest.approx(np.concatenate(parts[:50]).var(ddof=1), rel=1e-10)


def test_chan_merge_is_stable_for_large_offsets():
    rng = np.random.default_rng(33)
    parts = [1e9 + rng.normal(size=100) for _ in range(20)]
    merged = ab.Summary().merge_all(ab.Summary().update(p) for p in parts)
    assert merged.variance == pytest.approx(np.concatenate(parts).var(ddof=1), rel=1e-6)


def test_bad_input_and_corrupt_dicts():
    with pytest.raises(ValueError, match="NaN"):
        ab.Summary().update([1.0, np.inf])
    with pytest.raises(ValueError, match="empty"):
        ab.QuantileSketch().quantile(0.5)
    d = ab.Summary().update(np.arange(100.0)).to_dict()
    d["n"] = 99
    with pytest.raises(ValueError, match="n=99"):
        ab.Summary.from_dict(d)
    d["version"] = 99
    with pytest.raises(ValueError, match="upgrade"):
        ab.Summary.from_dict(d)
    assert np.isnan(ab.Summary().update([1.0]).variance)


def test_from_dicts_equals_merging_each_and_checks_payloads():
    rng = np.random.default_rng(34)
    parts = [rng.lognormal(size=rng.integers(1, 600)) for _ in range(400)]
    data = np.concatenate(parts)
    wire = [
        msgpack.unpackb(msgpack.packb(ab.Summary(seed=i).update(p).to_dict()))
        for i, p in enumerate(parts)
    ]
    wire.append(ab.Summary().to_dict())  # an idle worker's empty summary is skipped
    batched = ab.Summary.from_dicts(wire, seed=0)
    assert batched.n == data.size
    assert batched.mean == pytest.approx(data.mean(), rel=1e-12)
    assert batched.variance == pytest.approx(data.var(ddof=1), rel=1e-10)
    assert (batched.min, batched.max) == (data.min(), data.max())
    assert _rank_error(batched.sketch, data) <= ab.rank_error_bound(200)
    assert sum(level.size for level in batched.sketch.levels) < 3 * 200
    batched.update([1.0, 2.0])  # decoded levels are read-only views; updating must still work
    assert batched.n == data.size + 2
    assert ab.Summary.from_dicts([]).n == 0
    corrupt = dict(wire[0], sketch=dict(wire[0]["sketch"], levels=[b"\0" * 12]))
    with pytest.raises(ValueError, match="12 bytes"):
        ab.Summary.from_dicts([wire[1], corrupt])
    with pytest.raises(ValueError, match=r"Summary\.to_dict"):
        ab.Summary.from_dicts([wire[1], [1, 2]])
    with pytest.raises(ValueError, match="kind"):
        ab.QuantileSketch.from_dicts([{"kind": "ddsketch"}])
