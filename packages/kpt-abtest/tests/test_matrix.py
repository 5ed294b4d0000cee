"""Benchmark matrix with a baseline store: a verdict per cell, usable as a CI gate."""

import json
import textwrap

import numpy as np
import pytest

import kpt.abtest as ab
from kpt.abtest._cli import main

FAKE = textwrap.dedent('''
    """A fake model: step time by device, dtype and batch size; FAKE_SLOW slows one cell."""
    import os
    import numpy as np

    RNG = np.random.default_rng(int(os.environ.get("FAKE_SEED", "0")))
    BASE = {"cpu": 1e-2, "kpt_sim:0": 1e-3}

    class Step:
        def __init__(self, seconds):
            self.seconds = seconds
        def __call__(self):
            return None

    def workload(device, dtype, batch_size):
        key = f"{device}/{dtype}/bs={batch_size}"
        slow_key, _, factor = os.environ.get("FAKE_SLOW", "none:1").partition(":")
        scale = float(factor) if key == slow_key else 1.0
        per_dtype = 0.6 if dtype == "bfloat16" else 1.0
        return Step(BASE[device] * per_dtype * batch_size ** 0.5 * scale)

    def timer(device, step):
        return step.seconds * (1 + 0.01 * RNG.standard_normal())
''')


def _cells(rng, keys, trials=20, slow=None, factor=1.0):
    out = {}
    for i, key in enumerate(keys):
        mean = 0.01 * (1 + i) * (factor if key == slow else 1.0)
        out[key] = {"samples": mean * (1 + 0.01 * rng.standard_normal(trials)),
                    "clock": "measured"}  # fmt: skip
    return out


KEYS = [ab._matrix.cell_key(d, t, b) for d in ("cpu", "cuda:0") for t in ("float32", "bfloat16")
        for b in (1, 8, 32)]  # fmt: skip


def test_gate_false_alarm_rate_and_power_by_simulation():
    # 300 A/A reruns of a 12-cell matrix (20 trials, 1% noise): the gate must fail at most
    # ~alpha of the time for the whole matrix (Holm), while one cell 5% slower is caught.
    rng = np.random.default_rng(0)
    false_alarms = caught = 0
    for _ in range(300):
        base = {"cells": _cells(rng, KEYS)}
        false_alarms += ab.compare_to_baseline(_cells(rng, KEYS), base).failed
        slow = ab.compare_to_baseline(_cells(rng, KEYS, slow=KEYS[4], factor=1.05), base)
        caught += slow.verdicts[KEYS[4]].verdict == "regressed"
        assert sum(v.verdict == "regressed" for v in slow.verdicts.values()) <= 2
    assert false_alarms / 300 <= 0.05
    assert caught / 300 >= 0.95


def test_noise_band_new_missing_and_not_comparable():
    rng = np.random.default_rng(1)
    base = {"cells": _cells(rng, KEYS[:3])}
    now = _cells(rng, [KEYS[0], KEYS[1], KEYS[3]], trials=200, slow=KEYS[1], factor=1.01)
    now[KEYS[0]]["clock"] = "simulated"
    report = ab.compare_to_baseline(now, base, noise=0.02)
    verdicts = {k: v.verdict for k, v in report.verdicts.items()}
    # +1% with 200 trials is significant but inside the 2% band: not a regression
    assert verdicts == {KEYS[0]: "not comparable", KEYS[1]: "within noise", KEYS[3]: "new",
                        KEYS[2]: "missing"}  # fmt: skip
    assert not report.failed and "gate pass" in report.summary()


def test_store_refuses_bad_names_and_names_what_exists(tmp_path):
    store = ab.BaselineStore(tmp_path)
    store.save("main", {"cpu/float32/bs=1": {"samples": [1.0, 2.0]}})
    assert store.load("main")["cells"]["cpu/float32/bs=1"]["clock"] == "measured"
    with pytest.raises(ValueError, match=r"'mian' not found .* \(saved: main\)"):
        store.load("mian")
    with pytest.raises(ValueError, match="must be 1-100 letters"):
        store.save("../etc", {})


def test_cli_matrix_saves_then_gates_with_exit_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_model.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["matrix", "fake_model:workload", "--devices", "cpu,kpt_sim:0",
              "--dtypes", "float32,bfloat16", "--batch-sizes", "1,8", "--trials", "12",
              "--timer", "fake_model:timer", "--baseline-dir", str(tmp_path / "b")]  # fmt: skip
    assert main([*common, "--save-baseline", "main"]) == 0
    assert "saved baseline 'main'" in capsys.readouterr().out
    monkeypatch.setenv("FAKE_SEED", "1")
    assert main([*common, "--baseline", "main", "--out", str(tmp_path / "r.md")]) == 0
    assert "Gate: pass" in (tmp_path / "r.md").read_text()
    capsys.readouterr()
    monkeypatch.setenv("FAKE_SLOW", "cpu/bfloat16/bs=8:1.2")
    assert main([*common, "--baseline", "main", "--json"]) == 1  # the CI gate fails
    report = json.loads(capsys.readouterr().out)
    assert report["verdicts"]["cpu/bfloat16/bs=8"]["verdict"] == "regressed"
    assert [k for k, v in report["verdicts"].items() if v["verdict"] == "regressed"] == [
        "cpu/bfloat16/bs=8"
    ]
    assert main([*common, "--baseline", "nope"]) == 2
    assert "baseline 'nope' not found" in capsys.readouterr().err
