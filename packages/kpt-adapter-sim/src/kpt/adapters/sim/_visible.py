"""KPT_SIM_VISIBLE_DEVICES: this process sees a subset of the daemon's devices, numbered from 0.

Like CUDA_VISIBLE_DEVICES. Everything in the adapter speaks local indices; VisibleClient
translates them to daemon indices at the SimClient boundary, the one place that names devices.
One process per device (data-parallel workers on one shared daemon) is the usual way to train on
several simulated devices, and the fallback where the native device guard cannot be built
(see _autograd_guard).
"""

from __future__ import annotations

from typing import Any

from kpt.adapters.sim_hal._visible import ENV, check_visible, parse_visible, visible_count

__all__ = ["ENV", "VisibleClient", "check_visible", "parse_visible", "visible_count"]


class VisibleClient:
    """A SimClient seen through a device mapping: local index i is daemon index visible[i]."""

    def __init__(self, client: Any, visible: list[int]) -> None:
        all_devices = client.devices()
        check_visible(visible, len(all_devices))
        self._client = client
        self._to_daemon = list(visible)
        self._devices = []
        for local, daemon_index in enumerate(visible):
            info = dict(all_devices[daemon_index])
            info["daemon_index"], info["index"] = daemon_index, local
            self._devices.append(info)
        # Named on every collective's post (kpt.collectives) and its polls, and naming no
        # device: the client's own, found here at once rather than through a failed lookup
        # and __getattr__.
        self.holds = client.holds
        self.collective_cast = client.collective_cast
        self.collective_poll = client.collective_poll

    def __getattr__(self, name: str) -> Any:  # write, read, copy, free, event_time, now...
        return getattr(self._client, name)

    def daemon_index(self, device: int) -> int:
        return self._to_daemon[device]

    def devices(self) -> list[dict]:
        return [dict(d) for d in self._devices]

    def alloc(self, device: int, nbytes: int) -> int:
        return self._client.alloc(self._to_daemon[device], nbytes)

    def alloc_async(self, device: int, nbytes: int) -> int:
        return self._client.alloc_async(self._to_daemon[device], nbytes)

    def memory_stats(self, device: int) -> dict:
        return self._client.memory_stats(self._to_daemon[device])

    def reset_peak_memory_stats(self, device: int) -> None:
        self._client.reset_peak_memory_stats(self._to_daemon[device])

    def launch(self, device: int, *args: Any, **kwargs: Any) -> None:
        self._client.launch(self._to_daemon[device], *args, **kwargs)

    def graph_replay(self, device: int, on: bool) -> None:
        self._client.graph_replay(self._to_daemon[device], on)

    def graph(self, action: str, graph: int, device: int | None = None) -> None:
        self._client.graph(action, graph, None if device is None else self._to_daemon[device])

    def host_work(self, device: int, seconds: float) -> None:
        self._client.host_work(self._to_daemon[device], seconds)

    def record_event(self, device: int, stream: int = 0) -> int:
        return self._client.record_event(self._to_daemon[device], stream)

    def wait_event(self, event: int, device: int, stream: int = 0) -> None:
        self._client.wait_event(event, self._to_daemon[device], stream)

    def wait_stream(self, device: int, stream: int, on: int) -> None:
        self._client.wait_stream(self._to_daemon[device], stream, on)

    def synchronize(self, device: int | None = None) -> float:
        # "All devices" means this process's devices: other processes' work is not waited for.
        targets = self._to_daemon if device is None else [self._to_daemon[device]]
        now = 0.0
        for daemon_index in targets:
            now = self._client.synchronize(daemon_index)
        return now

    def collective(self, kind: str, inputs: Any, outputs: Any = (), op: str = "sum",
                   root: int | None = None, **options: Any) -> None:  # fmt: skip
        root = None if root is None else self._to_daemon[root]
        self._client.collective(kind, inputs, outputs, op, root, **options)

    def inject_fault(self, kind: str, **spec: Any) -> None:
        if isinstance(spec.get("device"), int):
            spec["device"] = self._to_daemon[spec["device"]]
        self._client.inject_fault(kind, **spec)
