"""Executors: what a worker is given is plain data, and a wrong executor is explained."""

import sys

import msgpack
import pytest

from kpt.abtest import evaluate_distributed
from kpt.abtest._executors import ProcessExecutor, WorkerSpec, executor_for


def test_a_shard_config_is_plain_msgpack_data():
    spec = WorkerSpec("tcp://127.0.0.1:5555", "pkg.mod:task", 3, {"n": 10, "tags": ["a"]}, 50, 0.5)
    config = spec.shard_config(2, "ray-w2")
    assert msgpack.unpackb(msgpack.packb(config)) == config  # nothing needs pickle
    assert config == {
        "endpoint": "tcp://127.0.0.1:5555", "task": "pkg.mod:task", "shard": 2, "shards": 3,
        "worker_id": "ray-w2", "options": {"n": 10, "tags": ["a"]}, "flush_every": 50,
        "flush_interval_s": 0.5,
    }  # fmt: skip


def test_options_that_would_need_pickle_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="plain values"):
        WorkerSpec("tcp://127.0.0.1:1", "m:f", 1, {"model": object()})
    with pytest.raises(ValueError, match="n_workers must be a whole number"):
        WorkerSpec("tcp://127.0.0.1:1", "m:f", 0)


def test_executors_by_name_and_unknown_names_explained():
    assert isinstance(executor_for("processes"), ProcessExecutor)
    with pytest.raises(ValueError, match="executor 'dask' unknown; use one of processes, ray"):
        executor_for("dask")
    with pytest.raises(ValueError, match="has no run"):
        executor_for(object())


def test_ray_executor_without_ray_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "kpt.abtest._ray_workers", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'kpt-abtest\[ray\]'"):
        evaluate_distributed("m:f", 1, executor="ray")


def test_curve_keys_ride_in_the_config_for_tasks_and_in_the_environment_for_processes():
    keys = {"curve_server_key": "S" * 40, "curve_public_key": "P" * 40, "curve_secret_key": "X"}
    spec = WorkerSpec("tcp://127.0.0.1:5555", "pkg.mod:task", 1, curve=keys)
    config = spec.shard_config(0, "ray-w0")
    assert {k: config[k] for k in keys} == keys
    assert msgpack.unpackb(msgpack.packb(config)) == config
