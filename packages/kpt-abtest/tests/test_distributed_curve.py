"""evaluate_distributed(curve=True): the aggregator speaks CURVE and admits only its workers."""

import pytest

pytest.importorskip("kpt.wire", reason="kpt-wire is the optional 'distributed' extra")

from test_distributed import TASK, WORKER_ENV, WORKER_TIMEOUT_S

from kpt.abtest import Aggregator, evaluate_distributed
from kpt.wire import Client, WireError, generate_keys


@pytest.mark.timeout(WORKER_TIMEOUT_S + 60)
def test_worker_processes_reach_a_curve_aggregator_with_the_keys_they_were_given():
    status = evaluate_distributed(
        TASK, 2, options={"n": 300}, env=WORKER_ENV, timeout=WORKER_TIMEOUT_S, curve=True
    )
    assert status["arms"]["a"]["n"] == 600 and status["arms"]["b"]["n"] == 600
    assert all(w["done"] and w["error"] is None for w in status["workers"].values())


def test_a_client_without_the_authorized_key_pair_is_not_heard():
    server_public, server_secret = generate_keys()
    worker_public, worker_secret = generate_keys()
    with Aggregator(
        curve_secret_key=server_secret, curve_public_key=server_public,
        authorized_keys=[worker_public],
    ) as aggregator:  # fmt: skip
        with Client(
            aggregator.endpoint, timeout=5, curve_server_key=server_public,
            curve_public_key=worker_public, curve_secret_key=worker_secret,
        ) as worker:  # fmt: skip
            assert worker.call("status", {}).header["arms"] == {}
        for keys in ({}, {"curve_server_key": server_public}):  # plain; or a throwaway pair
            with (
                Client(aggregator.endpoint, timeout=1, retries=0, **keys) as stranger,
                pytest.raises(WireError),
            ):
                stranger.call("status", {})
