"""The engine's clock: wall time on real devices, simulated time on a simulated one.

A real accelerator's timing events measure wall time on the device, which already includes
the host's scheduling gaps. A simulated device's events measure simulated chip time only, so
the engine tells it the host time it spent itself (scheduling, sampling, bookkeeping),
measured on this host: TTFT and TPOT on a simulated chip then come from the real scheduler
running against the simulated device. Where the device module takes host work
(torch.kpt_sim.host_work), the simulated host is busy that long and work already queued on
the chip goes on meanwhile; elsewhere the clock adds it after the chip's time.
"""

from __future__ import annotations

import time

import torch


class DeviceClock:
    """now_ms() since the clock was made; charge_host(s) adds host work on simulated devices."""

    def __init__(self, device: torch.device, simulated: bool) -> None:
        self.device = device
        self.simulated = simulated
        self._host_ms = 0.0
        self._device_ms = 0.0  # device time up to the event in self._start
        self._wall_start = time.perf_counter()
        self._start = None
        # Only a simulated device needs its events: on a real one the engine has waited for
        # the step (its sampled tokens reached the host), so wall time is device time.
        if simulated:
            module = getattr(torch, device.type, None)
            self._event_type = getattr(module, "Event", None)
            if self._event_type is None:
                raise RuntimeError(
                    f"simulated device {device} has no torch.{device.type}.Event, so its "
                    "clock cannot be read; is its adapter imported?"
                )
            self._host_work = getattr(module, "host_work", None)
            self._start = self._event_type(enable_timing=True)
            self._start.record()

    def now_ms(self) -> float:
        """Milliseconds since the clock started; waits for work queued on the device."""
        if self._start is None:
            return (time.perf_counter() - self._wall_start) * 1e3
        end = self._event_type(enable_timing=True)
        end.record()
        end.synchronize()
        self._device_ms += self._start.elapsed_time(end)
        # Measure from the newest event: a simulator keeps a bounded number of events per
        # client, and a long-running server's first one would be forgotten.
        self._start = end
        return self._device_ms + self._host_ms

    def host_time(self) -> float:
        """Seconds, for timing the engine's own host work to charge: this thread's CPU time on
        a simulated device, so that a loaded simulation host (a shared CI machine) charges what
        the work cost, not how long it waited for a core; wall time elsewhere."""
        return time.thread_time() if self.simulated else time.perf_counter()

    def charge_host(self, seconds: float) -> None:
        """Count host time the device's own timeline does not see (simulated devices only)."""
        if not self.simulated:
            return
        if self._host_work is not None:
            self._host_work(seconds, self.device)
        else:
            self._host_ms += seconds * 1e3
