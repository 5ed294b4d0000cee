"""kpt.hal query costs next to the torch calls they wrap, measured in the same run.

Targets (issue 4): cached capability/device query <= 5 us and <= 2 us over the torch call;
select over 16 devices <= 50 us; cold discovery with every adapter installed and no
accelerator <= 100 ms after imports.

    python packages/kpt-hal/benchmarks/bench_hal.py
"""

from __future__ import annotations

import importlib
import statistics
import time
import timeit

import torch

import kpt.hal as hal
from kpt.hal._discovery import installed_entry_points


def per_call_us(fn, number: int = 20_000, repeat: int = 7) -> float:
    """Median over `repeat` runs of the mean time per call, in microseconds."""
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


class Board(hal.Adapter):
    """16 fake accelerators over two nodes, for select() and plan_mesh() costs."""

    name = "bench"
    device_type = "cuda"

    def probe(self):
        return hal.Probe.found(16)

    def capabilities(self, index):
        return hal.Capabilities(
            vendor="bench",
            model="B1",
            index=index,
            memory_total=(16 + index) * 2**30,
            memory_free=(16 + index) * 2**30,
            peak_flops={"bfloat16": hal.Value(100e12 + index, "FLOP/s")},
            dtypes=frozenset({"float32", "bfloat16"}),
            interconnect=hal.Interconnect(node=f"n{index // 8}"),
            features=frozenset({"triton"}),
        )

    def health(self, index):
        return hal.HealthReport.healthy()

    def collectives_backend(self):
        return None

    def triton_target(self):
        return None


def torch_query():
    """The torch call a capability query stands in for on this machine."""
    if torch.cuda.is_available():
        return lambda: torch.cuda.get_device_properties(0), "torch.cuda.get_device_properties(0)"
    return lambda: torch.cpu.device_count(), "torch.cpu.device_count()"


def main() -> None:
    rows = []
    baseline_fn, baseline_name = torch_query()
    base = per_call_us(baseline_fn)

    hal.devices()  # warm the cache
    caps = per_call_us(lambda: hal.devices()[0].capabilities)
    rows.append(("hal.devices()[0].capabilities", caps, baseline_name, base, "<=5us, <=base+2us",
                 caps <= 5 and caps <= base + 2))  # fmt: skip
    lookup = per_call_us(lambda: hal.device("cpu"))
    rows.append(('hal.device("cpu")', lookup, baseline_name, base, "(info)", True))

    registry = hal.Registry(entry_points=[])
    registry.register(Board())
    sixteen = [d for d in registry.devices() if d.adapter == "bench"]
    assert len(sixteen) == 16

    def hand_loop():  # what a user writes without the HAL: biggest device with bf16
        return max(
            (d for d in sixteen if "bfloat16" in d.capabilities.dtypes),
            key=lambda d: d.capabilities.memory_total,
        )

    loop = per_call_us(hand_loop, number=5_000)
    sel = per_call_us(lambda: registry.select(dtype="bfloat16", min_memory="8GiB"), number=5_000)
    rows.append(("select() over 17 devices", sel, "hand-written max() loop", loop, "<=50us",
                 sel <= 50))  # fmt: skip
    mesh = per_call_us(lambda: registry.plan_mesh(16), number=1_000)
    rows.append(("plan_mesh(16) over 2x8", mesh, "hand-written max() loop", loop, "(info)", True))

    # Cold discovery: every installed adapter module imported first ("after imports").
    for ep in installed_entry_points():
        try:
            importlib.import_module(ep.value.partition(":")[0])
        except Exception:
            pass  # a broken adapter is timed as a rejection, like any other

    def cold() -> None:
        installed_entry_points.cache_clear()
        hal.Registry().devices()

    colds = []
    for _ in range(7):
        start = time.perf_counter()
        cold()
        colds.append((time.perf_counter() - start) * 1e6)
    cold_us = statistics.median(colds)
    probe_us = per_call_us(lambda: (torch.cuda.is_available(), torch.cuda.device_count()), 2_000)
    names = ",".join(sorted(ep.name for ep in installed_entry_points()))
    rows.append((f"cold discovery [{names}]", cold_us, "torch.cuda probe", probe_us,
                 "<=100000us", cold_us <= 100_000))  # fmt: skip

    print(f"torch {torch.__version__}; devices: {', '.join(d.name for d in hal.devices())}")
    print(f"{'kpt':<44} {'us':>10}  {'baseline':<36} {'us':>9} {'ratio':>7}  target")
    for name, ours, base_name, base_us, target, ok in rows:
        ratio = ours / base_us if base_us else float("nan")
        verdict = "ok" if ok else "MISSED"
        print(
            f"{name:<44} {ours:>10.2f}  {base_name:<36} {base_us:>9.3f} {ratio:>7.1f}  "
            f"{target} {verdict}"
        )


if __name__ == "__main__":
    main()
