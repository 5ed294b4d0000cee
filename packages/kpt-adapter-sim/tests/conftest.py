import os

import pytest

# One embedded daemon (two devices) for the whole session, computing with the torch executor.
os.environ.setdefault("KPT_SIM_DEVICES", "2")
os.environ.pop("KPT_SIM_ENDPOINT", None)


@pytest.fixture(scope="session")
def sim():
    import torch

    import kpt.adapters.sim as ks

    torch.zeros(1, device="kpt_sim")  # starts the daemon once
    yield ks
    ks.shutdown()
