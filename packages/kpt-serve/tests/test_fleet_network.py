"""A fleet beyond loopback: one CURVE key pair per fleet, its secret handed to workers in their
environment only; the router and workers admit only the fleet's own processes.

The servers here bind loopback (tests never bind a routable address); CURVE is switched on by
giving the fleet its keys, exactly as a routable bind does."""

from __future__ import annotations

import threading

import pytest
from conftest import make_gpt2
from fleet_helpers import assert_gone

from kpt.serve import LLM, SamplingParams
from kpt.wire import Client, TransportError, generate_keys

fleet_module = pytest.importorskip("kpt.serve.fleet")
from kpt.serve.fleet._launcher import worker_arguments, worker_env  # noqa: E402
from kpt.serve.fleet._messages import HELLO, PING  # noqa: E402
from kpt.serve.fleet._network import (  # noqa: E402
    PUBLIC_ENV,
    SECRET_ENV,
    FleetKeys,
    FleetNetwork,
    advertised,
)

pytestmark = pytest.mark.timeout(240)


def test_keys_are_made_for_a_routable_bind_only_and_the_secret_travels_in_the_environment():
    assert FleetNetwork.on("127.0.0.1").keys is None
    network = FleetNetwork.on("0.0.0.0", advertise_host="node7")
    keys = network.keys
    assert keys is not None and len(keys.public) == len(keys.secret) == 40
    assert keys.secret not in repr(keys) and keys.secret not in repr(network)
    spec = fleet_module.WorkerSpec(model="m", model_dir="/models/m")
    arguments = worker_arguments(spec, "w0", "tcp://router:5555", 1.0, network)
    assert arguments[-4:] == ["--bind-host", "0.0.0.0", "--advertise-host", "node7"]
    assert not any(keys.secret in a for a in arguments)  # `ps` shows every user the arguments
    env = worker_env(spec, network)
    assert FleetKeys.from_env(env) == keys
    assert FleetKeys.from_env({}) is None
    with pytest.raises(ValueError, match="both"):
        FleetKeys.from_env({PUBLIC_ENV: keys.public})
    assert SECRET_ENV not in worker_env(spec)


def test_a_wildcard_bind_is_advertised_by_host_name():
    assert advertised("tcp://0.0.0.0:4242", "node7") == "tcp://node7:4242"
    assert advertised("tcp://[::]:4242", "node7") == "tcp://node7:4242"
    assert advertised("tcp://10.0.0.3:4242", "node7") == "tcp://10.0.0.3:4242"
    assert advertised("ipc:///tmp/x.sock", "node7") == "ipc:///tmp/x.sock"
    assert advertised("tcp://0.0.0.0:4242").startswith("tcp://")
    assert not advertised("tcp://0.0.0.0:4242").startswith("tcp://0.0.0.0")


def test_a_keyed_fleet_serves_its_own_and_refuses_clients_without_its_keys(tmp_path):
    model_dir = make_gpt2(tmp_path / "m", layers=1, width=32)
    prompt, params = [5, 6, 7, 8], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    (expected,) = LLM(model_dir, device="cpu", num_kv_blocks=64).generate([prompt], params)
    network = FleetNetwork("127.0.0.1", keys=FleetKeys.generate())
    spec = fleet_module.WorkerSpec(model="m", model_dir=str(model_dir), threads=1,
                                   num_kv_blocks=64)  # fmt: skip
    fleet = fleet_module.Fleet([spec], heartbeat_s=1.0, network=network)
    pids = []
    try:
        fleet.start()
        fleet.wait_ready(timeout=180)
        pids = [p.pid for p in fleet.processes()]
        done = threading.Event()
        request = fleet.router.submit("m", prompt, params, lambda d: d.finished and done.set())
        assert done.wait(120), "the keyed fleet did not finish a request"
        assert request.error is None and request.token_ids == expected.token_ids

        (worker,) = fleet.router.workers()
        stranger_public, stranger_secret = generate_keys()
        strangers = {
            "no keys": {"curve_server_key": network.keys.public},
            "its own keys": {
                "curve_server_key": network.keys.public,
                "curve_public_key": stranger_public,
                "curve_secret_key": stranger_secret,
            },
        }
        for name, options in strangers.items():
            for endpoint, kind, header in (
                (worker.endpoint, PING, {}),
                (fleet.router.inbox_endpoint, HELLO, {"worker_id": "x", "endpoint": "tcp://x:1"}),
            ):
                client = Client(endpoint, timeout=2.0, retries=0, **options)
                try:
                    # ZeroMQ drops the handshake: the call times out, or finds the send queue
                    # full (no connection was ever made); either way, no answer.
                    with pytest.raises(TransportError):
                        client.call(kind, header)
                finally:
                    client.close()
            assert "x" not in {w.worker_id for w in fleet.router.workers()}, name
        # A member of the fleet is answered, on the same endpoints.
        member = Client(worker.endpoint, timeout=60.0, **network.keys.client_options())
        try:
            assert member.call(PING).header is not None
        finally:
            member.close()
    finally:
        fleet.close()
    assert_gone(pids)


def test_fleet_toml_and_the_flags_choose_the_network_the_flag_first():
    from argparse import Namespace

    from kpt.serve._cli import _network

    config = fleet_module.parse_fleet_config(
        {"bind_host": "0.0.0.0", "advertise_host": "head", "workers": [{"model": "a", "path": "p"}]}
    )
    assert (config.bind_host, config.advertise_host) == ("0.0.0.0", "head")
    network = _network(Namespace(bind_host=None, advertise_host=None), config)
    assert network.bind_host == "0.0.0.0" and network.advertise_host == "head"
    assert network.keys is not None
    assert _network(Namespace(bind_host="127.0.0.1", advertise_host=None), config) is None
    assert _network(Namespace(bind_host=None, advertise_host=None)) is None
    with pytest.raises(ValueError, match="bind_host"):
        fleet_module.parse_fleet_config({"bind_host": 7, "workers": [{"model": "a", "path": "p"}]})
