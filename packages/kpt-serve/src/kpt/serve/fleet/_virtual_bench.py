"""kpt-serve bench in virtual time: a scenario's arrivals on the simulated fleet's own clock.

`run_virtual(router, config)` takes `kpt-serve bench`'s config (its url unused) and reports
what the bench reports, in virtual ms: requests are released through the router's FleetClock
(see _virtual_time.py) at their arrival times, and their token times are the serving chips'
clocks. A scenario of minutes of virtual time costs what its steps cost to simulate: idle
stretches between arrivals cost nothing.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

from kpt.serve._sampling import SamplingParams
from kpt.serve.fleet._bench import BenchConfig, RequestRecord, prompts_for, summarize


def arrival_times_ms(config: BenchConfig, count: int) -> list[float]:
    """The scenario's arrivals on the virtual clock: Poisson at request_rate (Server), all at
    0 with an infinite rate (Offline); `duration_s` of them, or one per prompt."""
    if not math.isfinite(config.request_rate):
        return [0.0] * count
    rng = random.Random(config.seed)
    times, now = [], 0.0
    while True:
        if config.duration_s is None and len(times) >= count:
            return times
        if config.duration_s is not None and now >= config.duration_s:
            return times
        times.append(1000.0 * now)
        now += rng.expovariate(config.request_rate)


def run_virtual(router: Any, config: BenchConfig, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run the bench scenario against `router` (its workers on step_clock='virtual') in
    virtual time; the report is `kpt-serve bench`'s, in virtual ms, plus the wall time."""
    wall_start = time.perf_counter()
    models = router.models()
    model = config.model or (sorted(models)[0] if models else None)
    if model is None:
        raise RuntimeError("the fleet serves no model yet")
    prompts = prompts_for(config, models.get(model.partition(":")[0], {}))
    arrivals = arrival_times_ms(config, len(prompts))
    schedule = [(at_ms, *prompts[i % len(prompts)]) for i, at_ms in enumerate(arrivals)]
    requests = submit_virtual(router, model, schedule, timeout_s)
    ends = [r.finished_at for r in requests if r.finished_at is not None]
    elapsed = (max(ends) - arrivals[0] / 1000.0) if ends else 0.0
    result = summarize([_record(r) for r in requests], elapsed, config)
    result["clock"] = "virtual"
    result["wall_s"] = time.perf_counter() - wall_start
    return result


def submit_virtual(
    router: Any,
    model: str,
    schedule: list[tuple[float, str | list[int], int]],
    timeout_s: float = 600.0,
) -> list[Any]:
    """Release each (arrival ms, prompt, max_tokens) of `schedule` (in arrival order) when
    every worker's clock has reached its arrival; greedy, EOS ignored. Returns the finished
    FleetRequests, in order; their times are virtual seconds."""
    finished = threading.Semaphore(0)

    def on_delta(delta: Any) -> None:
        if delta.finished:
            finished.release()

    requests = []
    for at_ms, prompt, max_tokens in schedule:
        router.clock.advance(at_ms)
        router.clock.wait_until(at_ms, timeout_s)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        requests.append(router.submit(model, prompt, params, on_delta, arrival_ms=at_ms))
    router.clock.advance(None)  # no more arrivals: the workers run to the end
    deadline = time.monotonic() + timeout_s
    for _ in requests:
        if not finished.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"virtual time: requests unfinished after {timeout_s:.0f} s")
    return requests


def _record(request: Any) -> RequestRecord:
    """A bench record from a finished request whose times are virtual seconds."""
    record = RequestRecord(
        ok=request.error is None and bool(request.token_ids),
        error=request.error or "",
        prompt_tokens=len(request.prompt_ids or ()),
        output_tokens=len(request.token_ids),
        chip=request.chip,
        device_ttft_ms=request.device_ttft_ms,
        device_tpot_ms=request.device_tpot_ms,
    )
    if request.ttft_s is not None and request.e2e_s is not None:
        record.ttft_ms = 1000.0 * request.ttft_s
        record.e2e_ms = 1000.0 * request.e2e_s
        record.itl_ms = [1000.0 * gap for gap in request.inter_token_s()]
    return record
