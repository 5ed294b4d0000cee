import contextlib
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


@pytest.fixture
def private_daemon(sim):
    """A factory: ``with private_daemon(**start_daemon_options) as daemon:`` (see below)."""
    return _private_daemon


@contextlib.contextmanager
def _private_daemon(**options):
    """Point this process's kpt_sim at a fresh daemon (faults, kills) and back afterwards.

    The shared session daemon is disconnected first (its tensors must not be used inside);
    the next plain kpt_sim use after this block starts a new embedded one.
    """
    import kpt.adapters.sim as ks
    from kpt.sim import start_daemon

    ks.shutdown()
    daemon = start_daemon(
        **{"executor": "torch", "devices": 1, "startup_timeout": 180.0, **options}
    )
    previous = os.environ.get("KPT_SIM_ENDPOINT")
    os.environ["KPT_SIM_ENDPOINT"] = daemon.endpoint
    try:
        yield daemon
    finally:
        if previous is None:
            os.environ.pop("KPT_SIM_ENDPOINT", None)
        else:
            os.environ["KPT_SIM_ENDPOINT"] = previous
        try:
            ks.shutdown()
        finally:
            daemon.stop()
