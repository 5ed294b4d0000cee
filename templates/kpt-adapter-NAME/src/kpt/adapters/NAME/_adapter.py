"""NameAdapter: what kpt.hal needs to know about NAME chips."""

from __future__ import annotations

from kpt.hal import Adapter, Capabilities, HealthReport, HealthState, Probe, Value

from kpt.adapters.NAME._runtime import runtime

LOOKED_FOR = "NAME chips through the NAME runtime"
# The dtypes the chip computes; the kit checks each one (copy both ways, x + x, matmul).
DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int32", "int64", "bool"})
PEAK_FLOPS = {"float32": 1e12, "bfloat16": 4e12}  # datasheet figures, FLOP/s


class NameAdapter(Adapter):
    name = "NAME"
    device_type = "NAME"
    uses_privateuse1 = True  # a new torch device type: torch's one PrivateUse1 slot

    def probe(self) -> Probe:
        # Cheap and side-effect free: `kpt devices` and every select() call it.
        missing = runtime().missing()
        if missing:
            return Probe.none(missing, LOOKED_FOR)
        count = runtime().device_count()
        if count == 0:
            return Probe.none("the NAME runtime found no chip", LOOKED_FOR)
        return Probe.found(count, LOOKED_FOR)

    def capabilities(self, index: int) -> Capabilities:
        from kpt.adapters.NAME._device import register

        register()  # a chip was found and is wanted: now take the PrivateUse1 slot
        free, total = self.memory_info(index)
        return Capabilities(
            vendor="NAME",
            model="NAME chip (host stand-in)",
            index=index,
            memory_total=total,
            memory_free=free,
            peak_flops={d: Value(f, "FLOP/s", "nominal") for d, f in PEAK_FLOPS.items()},
            dtypes=DTYPES,
            # The stand-in runtime emulates the chip on the host: say so, so that select()
            # ranks it below real accelerators. Drop "simulated" once _runtime.py drives a chip.
            features=frozenset({"simulated"}),
        )

    def health(self, index: int) -> HealthReport:
        return HealthReport(HealthState.HEALTHY, "")

    def collectives_backend(self) -> str | None:
        return None  # no torch.distributed backend for NAME yet

    def triton_target(self) -> str | None:
        return None  # Triton kernels run in its interpreter on the host, then copy back
