"""Cross-hardware benchmarking: one workload on several devices, relative speed with intervals,
and cost-performance from prices per device-hour.

Times on kpt_sim are SIMULATED (the chip profile's clock), not measured: every printed figure
says so, and a simulated device is not ranked against a measured one (speed ratio, cheapest)
unless rank_simulated_against_measured=True asks for it.

torch and kpt-hal are optional (extra ``torch``) and imported only when a device needs them.
Devices are run in ABBA order (forward then backward over the devices) so host drift cancels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from kpt.abtest._compare import compare

# A timer runs one step on a device and returns its duration in seconds.
Timer = Callable[[Any, Callable[[], Any]], float]


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "benchmarking torch devices needs torch: pip install 'kpt-abtest[torch]'"
        ) from None
    return torch


def find_devices() -> list[Any]:
    """Every usable device kpt-hal finds; without kpt-hal, just the CPU."""
    try:
        import kpt.hal as hal
    except ImportError:
        return ["cpu"]
    return [d.torch_device for d in hal.devices()] or ["cpu"]


def device_timer(device: Any, step: Callable[[], Any]) -> float:
    """Seconds for one step: device events where the backend has them (on kpt_sim these are
    simulated times), otherwise wall time around the step and a device synchronize."""
    torch = _torch()
    device = torch.device(device)
    backend = getattr(torch, device.type, None)
    event = getattr(backend, "Event", None) if device.type != "cpu" else None
    if event is not None:
        start, end = event(enable_timing=True), event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    synchronize = getattr(backend, "synchronize", None) if device.type != "cpu" else None
    started = time.perf_counter()
    step()
    if synchronize is not None:
        synchronize()
    return time.perf_counter() - started


def wall_timer(device: Any, step: Callable[[], Any]) -> float:
    """Plain wall time of one step (for workloads that are not torch, or that synchronize)."""
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


SIMULATED, MEASURED = "simulated", "measured"
NOT_RANKED = "not ranked: simulated vs measured time (rank_simulated_against_measured=True)"


def simulated_devices(names: Sequence[str], timer: Timer | None) -> set[str]:
    """Devices whose step times are simulated: kpt_sim devices timed by their events."""
    if timer not in (None, device_timer):
        return set()  # a custom timer decides what it measures; say so with simulated=
    return {name for name in names if name.split(":")[0] == "kpt_sim"}


@dataclass(frozen=True)
class DeviceResult:
    name: str
    n: int
    mean_s: float
    mean_ci: tuple[float, float]
    speedup: float  # baseline time / this device's time: 2.0 means twice as fast
    speedup_ci: tuple[float, float]
    price_per_hour: float | None
    cost_per_million_steps: float | None
    cost_ci: tuple[float, float] | None
    samples: np.ndarray = field(repr=False)
    clock: str = MEASURED  # SIMULATED: the simulator's chip-profile time, not a measurement

    @property
    def label(self) -> str:
        """The device name, marked when its times are simulated."""
        return f"{self.name} [simulated]" if self.clock == SIMULATED else self.name


@dataclass(frozen=True)
class DeviceBenchmark:
    workload: str
    baseline: str
    alpha: float
    devices: dict[str, DeviceResult]
    rank_simulated_against_measured: bool = False

    def summary(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        base = self.devices[self.baseline]
        lines = []
        for name, d in self.devices.items():
            unit = "simulated s/step" if d.clock == SIMULATED else "s/step"
            if name == self.baseline:
                lines.append(f"{d.label}: {d.mean_s:.4g} {unit} (baseline)")
                continue
            if not math.isfinite(d.speedup):
                lines.append(
                    f"{d.label}: {d.mean_s:.4g} {unit}; not ranked against {base.label}: "
                    f"{d.clock} vs {base.clock} time (pass rank_simulated_against_measured=True "
                    "to compare anyway)"
                )
                continue
            low, high = d.speedup_ci
            mixed = " (simulated vs measured time)" if d.clock != base.clock else ""
            lines.append(
                f"{d.label}: {d.mean_s:.4g} {unit}, {d.speedup:.3g}x the speed of {base.label}"
                f"{mixed} ({level} CI {low:.3g}x to {high:.3g}x)"
            )
        lines += self._cheapest()
        return "\n".join(lines)

    def _cheapest(self) -> list[str]:
        priced = {n: d for n, d in self.devices.items() if d.cost_per_million_steps is not None}
        groups = {"": priced}
        if len({d.clock for d in priced.values()}) > 1:
            groups = {" (mixing simulated and measured times)": priced}
            if not self.rank_simulated_against_measured:
                groups = {
                    f" among {clock} devices": {n: d for n, d in priced.items() if d.clock == clock}
                    for clock in (MEASURED, SIMULATED)
                }
        lines = []
        for where, group in groups.items():
            if group:
                cheapest = min(group, key=lambda n: group[n].cost_per_million_steps)
                cost = group[cheapest].cost_per_million_steps
                lines.append(
                    f"Cheapest per step{where}: {group[cheapest].label} at {cost:.4g} per "
                    "million steps."
                )
        return lines

    def to_dict(self) -> dict[str, Any]:
        devices = {}
        for name, d in self.devices.items():
            devices[name] = {
                "n": d.n,
                "mean_s": d.mean_s,
                "mean_ci": list(d.mean_ci),
                "speedup": d.speedup,
                "speedup_ci": list(d.speedup_ci),
                "price_per_hour": d.price_per_hour,
                "cost_per_million_steps": d.cost_per_million_steps,
                "cost_ci": list(d.cost_ci) if d.cost_ci else None,
                "samples": [float(v) for v in d.samples],
                "clock": d.clock,
            }
        return {
            "workload": self.workload,
            "baseline": self.baseline,
            "alpha": self.alpha,
            "rank_simulated_against_measured": self.rank_simulated_against_measured,
            "devices": devices,
            "summary": self.summary(),
        }


def benchmark_devices(
    workload: Callable[[Any], Callable[[], Any]],
    devices: Sequence[Any] | None = None,
    *,
    prices: Mapping[str, float] | None = None,
    trials: int = 30,
    warmup: int = 3,
    baseline: str | None = None,
    alpha: float = 0.05,
    timer: Timer | None = None,
    simulated: Collection[str] | None = None,
    rank_simulated_against_measured: bool = False,
) -> DeviceBenchmark:
    """Run ``workload(device)() `` (setup once per device, then timed steps) on every device.

    ``devices``: torch devices or strings ("cpu", "cuda:0", "kpt_sim:0"); default: what kpt-hal
    finds. ``prices``: currency per device-hour, keyed by device name, for cost per step.
    ``timer``: how one step is timed (default: device events, else wall time + synchronize).
    ``simulated``: names of devices whose times are simulated (default: kpt_sim devices under
    the default timer). A simulated device gets no speed ratio against a measured baseline and
    is not ranked against measured devices unless ``rank_simulated_against_measured=True``.
    """
    if devices is None:
        devices = find_devices()
    names = [str(d) for d in devices]
    if not names:
        raise ValueError("no devices to benchmark; pass devices=['cpu', ...]")
    if len(set(names)) != len(names):
        raise ValueError(f"devices must be distinct, got {names}")
    if int(trials) != trials or trials < 2:
        raise ValueError(f"trials must be a whole number >= 2, got {trials!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    baseline = names[0] if baseline is None else str(baseline)
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the devices {names}")
    prices = dict(prices or {})
    unknown = sorted(set(prices) - set(names))
    if unknown:
        raise ValueError(f"prices given for {unknown}, which are not benchmarked devices {names}")
    for name, price in prices.items():
        if not (math.isfinite(price) and price >= 0):
            raise ValueError(f"price for {name!r} must be a finite number >= 0, got {price!r}")
    simulated = set(simulated_devices(names, timer) if simulated is None else map(str, simulated))
    if not simulated <= set(names):
        raise ValueError(f"simulated={sorted(simulated)} names devices not benchmarked: {names}")
    timer = timer or device_timer
    steps = {name: workload(device) for name, device in zip(names, devices)}
    for _ in range(warmup):
        for name, device in zip(names, devices):
            timer(device, steps[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    forward = list(zip(names, devices))
    for trial in range(trials):
        for name, device in forward if trial % 2 == 0 else forward[::-1]:  # ABBA over devices
            times[name].append(float(timer(device, steps[name])))
    return _summarize(
        _workload_name(workload), times, baseline=baseline, prices=prices, alpha=alpha,
        simulated=simulated, rank_mixed=rank_simulated_against_measured,
    )  # fmt: skip


def _workload_name(workload: Any) -> str:
    return getattr(workload, "__qualname__", None) or type(workload).__name__


def _summarize(
    workload: str,
    times: Mapping[str, list[float]],
    *,
    baseline: str,
    prices: Mapping[str, float],
    alpha: float,
    simulated: Collection[str] = (),
    rank_mixed: bool = False,
) -> DeviceBenchmark:
    base = np.asarray(times[baseline])
    clock = {name: SIMULATED if name in simulated else MEASURED for name in times}
    results = {}
    for name, values in times.items():
        values = np.asarray(values)
        mean = float(values.mean())
        half = float(stats.t.ppf(1 - alpha / 2, values.size - 1) * values.std(ddof=1))
        half /= math.sqrt(values.size)
        mean_ci = (mean - half, mean + half)
        if name == baseline:
            speedup, speedup_ci = 1.0, (1.0, 1.0)
        elif clock[name] != clock[baseline] and not rank_mixed:
            speedup, speedup_ci = math.nan, (math.nan, math.nan)  # refused: not comparable
        else:
            comparison = compare(base, values, metric="mean", alpha=alpha)
            low, high = comparison.relative_ci
            # speed ratio = t_base / t_device = 1 / (1 + relative time difference): monotone
            speedup = float(base.mean() / mean)
            speedup_ci = (_inverse(high), _inverse(low))
        price = prices.get(name)
        cost = cost_ci = None
        if price is not None:
            per_step = price / 3600.0 * 1e6
            cost = per_step * mean
            cost_ci = (per_step * max(mean_ci[0], 0.0), per_step * mean_ci[1])
        results[name] = DeviceResult(
            name=name,
            n=int(values.size),
            mean_s=mean,
            mean_ci=mean_ci,
            speedup=speedup,
            speedup_ci=speedup_ci,
            price_per_hour=price,
            cost_per_million_steps=cost,
            cost_ci=cost_ci,
            samples=values,
            clock=clock[name],
        )
    return DeviceBenchmark(
        workload=workload, baseline=baseline, alpha=alpha, devices=results,
        rank_simulated_against_measured=rank_mixed,
    )  # fmt: skip


def _inverse(relative: float) -> float:
    return 1.0 / (1.0 + relative) if relative > -1 else math.inf
