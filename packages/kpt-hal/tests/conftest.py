"""Fake adapters, injected through the public discovery API (Registry.register)."""

from __future__ import annotations

import pytest

import kpt.hal as hal


class FakeAdapter(hal.Adapter):
    """A configurable adapter: devices, memory, links, health, failures on demand."""

    def __init__(
        self,
        name="fake",
        device_type="cuda",
        count=2,
        *,
        vendor="fakevendor",
        model="Fake X1",
        memory=16 * 2**30,
        flops=100e12,
        dtypes=("float32", "bfloat16"),
        features=("triton",),
        nodes=None,
        peers=None,
        link_gbps=0.0,
        privateuse1=False,
        probe_error=None,
    ):
        self.name = name
        self.device_type = device_type
        self.uses_privateuse1 = privateuse1
        self.count = count
        self.vendor, self.model, self.memory, self.flops = vendor, model, memory, flops
        self.dtypes, self.features = frozenset(dtypes), frozenset(features)
        self.nodes = nodes
        self.peers = peers
        self.link_gbps = link_gbps
        self.probe_error = probe_error
        self.probes = 0
        self.states = {}  # index -> HealthReport

    def probe(self):
        self.probes += 1
        if self.probe_error:
            raise self.probe_error
        if self.count == 0:
            return hal.Probe.none("no fake cards plugged in", "fake cards on /dev/fake*")
        return hal.Probe.found(self.count)

    def capabilities(self, index):
        links = ()
        if self.link_gbps:
            links = (hal.Link("fakelink", hal.Value(self.link_gbps * 1e9, "B/s")),)
        return hal.Capabilities(
            vendor=self.vendor,
            model=self.model,
            index=index,
            memory_total=self.memory,
            memory_free=self.memory,
            peak_flops={"bfloat16": hal.Value(self.flops, "FLOP/s")},
            dtypes=self.dtypes,
            interconnect=hal.Interconnect(
                self.nodes[index] if self.nodes else "node-a",
                links,
                frozenset(self.peers[index]) if self.peers else frozenset(),
            ),
            features=self.features,
        )

    def health(self, index):
        return self.states.get(index, hal.HealthReport.healthy())

    def collectives_backend(self):
        return "gloo"

    def triton_target(self):
        return None


@pytest.fixture
def fake_adapter():
    return FakeAdapter


@pytest.fixture
def empty_registry(monkeypatch):
    """A registry with no installed entry points (only the built-in CPU) and no allow-list."""
    monkeypatch.delenv(hal.ALLOW_LIST_ENV, raising=False)
    return hal.Registry(entry_points=[])
