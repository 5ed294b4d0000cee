"""kpt-serve bench: load an OpenAI-compatible server and report what `vllm bench serve` does.

Arrivals are Poisson at `request_rate` (MLPerf LoadGen's Server scenario) or all at once with
an infinite rate (Offline). Each request streams, so TTFT is the first token's arrival, ITL the
gaps between streamed deltas, TPOT (E2E - TTFT) / (output tokens - 1), all in wall-clock ms at
the client. Goodput counts the requests per second that met every SLO given.

Each response also says which chip served it and its TTFT/TPOT on that worker's clock (the
`kpt` field; simulated time on a simulated chip): the report breaks those down per chip.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class BenchConfig:
    url: str
    model: str | None = None
    dataset: str = "random"  # "random", or a JSONL file: {"prompt": ..., "max_tokens": ...}
    request_rate: float = float("inf")
    duration_s: float | None = (
        None  # arrivals for this long (cycling the dataset); None: num_prompts
    )
    num_prompts: int = 100
    input_len: int = 32
    output_len: int = 32
    max_concurrency: int | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    seed: int = 0
    timeout_s: float = 600.0
    # MLPerf-style gates: the run is valid only if these p99s (wall ms at the client) hold and
    # no request failed, as LoadGen's Server scenario requires of its latency constraints.
    gate_ttft_p99_ms: float | None = None
    gate_tpot_p99_ms: float | None = None


@dataclass
class RequestRecord:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_ms: float = 0.0
    e2e_ms: float = 0.0
    itl_ms: list[float] = field(default_factory=list)
    chip: str | None = None
    device_ttft_ms: float | None = None
    device_tpot_ms: float | None = None

    @property
    def tpot_ms(self) -> float | None:
        if self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)


def run_bench(config: BenchConfig) -> dict[str, Any]:
    return asyncio.run(_run(config))


async def _run(config: BenchConfig) -> dict[str, Any]:
    base = config.url.rstrip("/")
    limits = httpx.Limits(
        max_connections=config.max_concurrency or 1000, max_keepalive_connections=100
    )
    async with httpx.AsyncClient(timeout=config.timeout_s, limits=limits) as http:
        model, info = await _model(http, base, config.model)
        prompts = prompts_for(config, info)
        rng = random.Random(config.seed)
        gate = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        tasks: list[asyncio.Task] = []
        start = time.perf_counter()
        index = 0
        while True:
            if config.duration_s is None and index >= len(prompts):
                break
            if config.duration_s is not None and time.perf_counter() - start >= config.duration_s:
                break
            prompt, max_tokens = prompts[index % len(prompts)]
            tasks.append(asyncio.create_task(_one(http, base, model, prompt, max_tokens, gate)))
            index += 1
            if math.isfinite(config.request_rate):
                await asyncio.sleep(rng.expovariate(config.request_rate))
        records = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return summarize(records, elapsed, config)


async def _model(http: httpx.AsyncClient, base: str, model: str | None) -> tuple[str, dict]:
    reply = await http.get(f"{base}/v1/models")
    reply.raise_for_status()
    models = {m["id"]: m for m in reply.json()["data"]}
    if model is None:
        if not models:
            raise RuntimeError(f"{base} serves no model yet (GET /v1/models is empty)")
        model = sorted(models)[0]
    return model, models.get(model.partition(":")[0], {})


def prompts_for(config: BenchConfig, info: dict) -> list[tuple[str | list[int], int]]:
    if config.dataset != "random":
        out = []
        for line in Path(config.dataset).read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                out.append((item["prompt"], int(item.get("max_tokens", config.output_len))))
        if not out:
            raise ValueError(
                f'dataset {config.dataset} holds no prompts (JSONL: {{"prompt": ...}})'
            )
        return out
    vocab = int(info.get("vocab_size") or 1000)
    gen = np.random.default_rng(config.seed)
    count = config.num_prompts if config.duration_s is None else max(config.num_prompts, 1)
    # Ids from 2 up: 0 and 1 are often BOS and EOS.
    return [
        (gen.integers(2, vocab, config.input_len).tolist(), config.output_len) for _ in range(count)
    ]


async def _one(http, base, model, prompt, max_tokens, gate) -> RequestRecord:
    if gate is not None:
        async with gate:
            return await _stream(http, base, model, prompt, max_tokens)
    return await _stream(http, base, model, prompt, max_tokens)


async def _stream(http, base, model, prompt, max_tokens) -> RequestRecord:
    body = {
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
        "ignore_eos": True, "stream": True, "return_token_ids": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    record = RequestRecord()
    start = last = time.perf_counter()
    try:
        async with http.stream("POST", f"{base}/v1/completions", json=body) as reply:
            if reply.status_code != 200:
                record.error = f"HTTP {reply.status_code}: {(await reply.aread())[:200]!r}"
                return record
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    record.error = str(chunk["error"])
                    return record
                served = chunk.get("kpt")
                if isinstance(served, dict):
                    record.chip = served.get("chip")
                    record.device_ttft_ms = served.get("device_ttft_ms")
                    record.device_tpot_ms = served.get("device_tpot_ms")
                if chunk.get("usage"):
                    record.prompt_tokens = chunk["usage"]["prompt_tokens"]
                for choice in chunk.get("choices", []):
                    count = len(choice.get("token_ids") or [])
                    if not count:
                        continue
                    now = time.perf_counter()
                    if record.output_tokens == 0:
                        record.ttft_ms = 1000 * (now - start)
                    else:
                        record.itl_ms.append(1000 * (now - last))
                    last = now
                    record.output_tokens += count
        record.e2e_ms = 1000 * (time.perf_counter() - start)
        record.ok = record.output_tokens > 0
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    return record


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "p99": 0.0}
    array = np.asarray(values, dtype=float)
    out = {"mean": float(array.mean())}
    for p in PERCENTILES:
        out["median" if p == 50 else f"p{p}"] = float(np.percentile(array, p))
    return out


def summarize(records: list[RequestRecord], elapsed: float, config: BenchConfig) -> dict[str, Any]:
    done = [r for r in records if r.ok]
    output = sum(r.output_tokens for r in done)
    prompt = sum(r.prompt_tokens for r in done)
    good = [
        r
        for r in done
        if (config.slo_ttft_ms is None or r.ttft_ms <= config.slo_ttft_ms)
        and (config.slo_tpot_ms is None or (r.tpot_ms or 0.0) <= config.slo_tpot_ms)
    ]
    errors = sorted({r.error for r in records if not r.ok})[:5]
    return {
        "config": {
            k: (v if not isinstance(v, float) or math.isfinite(v) else "inf")
            for k, v in asdict(config).items()
        },
        "completed": len(done),
        "failed": len(records) - len(done),
        "errors": errors,
        "duration_s": elapsed,
        "request_throughput": len(done) / elapsed if elapsed else 0.0,
        "output_throughput": output / elapsed if elapsed else 0.0,
        "total_token_throughput": (output + prompt) / elapsed if elapsed else 0.0,
        "goodput": len(good) / elapsed if elapsed else 0.0,
        "ttft_ms": _stats([r.ttft_ms for r in done]),
        "tpot_ms": _stats([t for r in done if (t := r.tpot_ms) is not None]),
        "itl_ms": _stats([gap for r in done for gap in r.itl_ms]),
        "e2e_ms": _stats([r.e2e_ms for r in done]),
        "per_chip": _per_chip(done),
        **_gates(config, records, done),
    }


def _gates(config: BenchConfig, records: list, done: list) -> dict[str, Any]:
    """The scenario run (MLPerf LoadGen's names) and whether its latency gates held."""
    scenario = "server" if math.isfinite(config.request_rate) else "offline"
    gates = {}
    for key, target, values in (
        ("ttft_p99_ms", config.gate_ttft_p99_ms, [r.ttft_ms for r in done]),
        ("tpot_p99_ms", config.gate_tpot_p99_ms, [t for r in done if (t := r.tpot_ms)]),
    ):
        if target is not None:
            measured = _stats(values)["p99"] if values else float("inf")
            gates[key] = {"target": target, "measured": measured, "passed": measured <= target}
    valid = len(done) == len(records) and all(g["passed"] for g in gates.values())
    return {"scenario": scenario, "gates": gates, "valid": valid}


def _per_chip(done: list[RequestRecord]) -> dict[str, dict[str, Any]]:
    """Requests, and TTFT/TPOT on the serving worker's clock, per chip that served them."""
    out: dict[str, dict[str, Any]] = {}
    for chip in sorted({r.chip for r in done if r.chip}):
        mine = [r for r in done if r.chip == chip]
        out[chip] = {
            "requests": len(mine),
            "device_ttft_ms": _stats([r.device_ttft_ms for r in mine if r.device_ttft_ms]),
            "device_tpot_ms": _stats([r.device_tpot_ms for r in mine if r.device_tpot_ms]),
            "ttft_ms": _stats([r.ttft_ms for r in mine]),
            "tpot_ms": _stats([t for r in mine if (t := r.tpot_ms) is not None]),
        }
    return out


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"{'Successful requests:':<34}{result['completed']}",
        f"{'Failed requests:':<34}{result['failed']}",
        f"{'Benchmark duration (s):':<34}{result['duration_s']:.2f}",
        f"{'Request throughput (req/s):':<34}{result['request_throughput']:.2f}",
        f"{'Output token throughput (tok/s):':<34}{result['output_throughput']:.1f}",
        f"{'Total token throughput (tok/s):':<34}{result['total_token_throughput']:.1f}",
        f"{'Goodput (req/s):':<34}{result['goodput']:.2f}",
    ]
    for key, title in (
        ("ttft_ms", "TTFT"),
        ("tpot_ms", "TPOT"),
        ("itl_ms", "ITL"),
        ("e2e_ms", "E2E"),
    ):
        s = result[key]
        lines.append(
            f"{title + ' (ms):':<34}mean {s['mean']:.1f}  median {s['median']:.1f}  "
            f"p90 {s['p90']:.1f}  p99 {s['p99']:.1f}"
        )
    for key, gate in result.get("gates", {}).items():
        verdict = "PASS" if gate["passed"] else "FAIL"
        lines.append(
            f"{'Gate ' + key + ':':<34}{verdict}: {gate['measured']:.1f} against {gate['target']:g}"
        )
    if "valid" in result:
        lines.append(f"{'Result (' + result['scenario'] + '):':<34}"
                     + ("VALID" if result["valid"] else "INVALID"))  # fmt: skip
    for chip, per in result.get("per_chip", {}).items():
        ttft, tpot = per["device_ttft_ms"], per["device_tpot_ms"]
        lines.append(
            f"{chip + ':':<34}{per['requests']} requests; on its clock TTFT median "
            f"{ttft['median']:.2f} p99 {ttft['p99']:.2f} ms, TPOT median {tpot['median']:.3f} "
            f"p99 {tpot['p99']:.3f} ms"
        )
    for error in result["errors"]:
        lines.append(f"error: {error}")
    return "\n".join(lines)
