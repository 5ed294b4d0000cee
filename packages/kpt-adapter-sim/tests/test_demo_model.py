"""The demo's GPT must be the model the real H100 timed, or its predicted-vs-measured line lies.

The H100 run (simulator/calibration/reference_steps.py) imports nothing from kpt, so the demo
keeps its own copy; this test holds the two together: same configurations, same parameters,
same function.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from kpt.adapters.sim import demo

REFERENCE = Path(__file__).resolve().parents[3] / "simulator/calibration/reference_steps.py"


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is not here (tests run outside the repository)")
    spec = importlib.util.spec_from_file_location("reference_steps", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configurations_are_the_timed_ones(reference) -> None:
    assert reference.REFERENCE_MODELS["demo_gpt"] == demo.DEMO_CONFIG
    assert reference.REFERENCE_MODELS["gpt2_small"] == demo.GPT2_SMALL


def test_same_parameters_and_same_function(reference) -> None:
    shape = {k: v for k, v in demo.DEMO_CONFIG.items() if k != "batch"}
    ours, theirs = demo.GPT(**shape), reference.GPT(**shape)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    idx = torch.randint(0, shape["vocab"], (2, shape["context"]))
    torch.testing.assert_close(ours(idx), theirs(idx))
