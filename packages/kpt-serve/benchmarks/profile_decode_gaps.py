"""Where a chained decode step's device time goes beyond the bare forward: torch.profiler over
steady decode of the GPT-2-small-sized model (bench_engine_gpu's), on CUDA.

For each batch it prints, per decode step: the wall period, the device's busy time (the union
of every kernel's and copy's interval), its idle time, the device work by kernel name and the
idle time by the pair of operations around it, so that what the engine adds to the graph
replay (sampling, copies, gaps) is seen apart.

    python benchmarks/profile_decode_gaps.py --batches 128,256 [--kind final_only]

First it times the host's cudaGraphLaunch for one graph replayed back to back against two
copies replayed in turn, each graph a few hundred small kernels, while the device is busy; then
the device time a replay takes with each piece of an engine step's own work queued before it.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_engine_gpu import ensure_cuda_adapter, make_gpt2, make_requests
from torch.profiler import ProfilerActivity, profile

from kpt.serve import LLM, SamplingParams


def busy_union(intervals: list[tuple[float, float]]) -> float:
    """Microseconds covered by at least one interval."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def launch_test(kernels: int = 300, replays: int = 50) -> None:
    """Host microseconds per replay: the same graph back to back, then two copies in turn."""
    x = torch.zeros(1 << 16, device="cuda")
    side = torch.cuda.Stream()
    graphs = []
    with torch.cuda.stream(side):
        for _ in range(2):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(kernels):
                    x.add_(1.0)
            graphs.append(graph)
    torch.cuda.synchronize()
    for name, order in (("one graph", [0] * replays), ("two in turn", [0, 1] * (replays // 2))):
        host = []
        start = time.perf_counter()
        for index in order:
            t = time.perf_counter()
            graphs[index].replay()
            host.append(time.perf_counter() - t)
        launched = time.perf_counter() - start
        torch.cuda.synchronize()
        total = time.perf_counter() - start
        print(
            f"launch test, {name}: host {statistics.median(host) * 1e6:.1f} us a replay "
            f"(median), all launched in {launched * 1e3:.1f} ms, done in {total * 1e3:.1f} ms"
        )
    handoff_test(graphs[0], replays)


def handoff_test(graph: torch.cuda.CUDAGraph, replays: int) -> None:
    """Device time per replay with the work an engine step queues between replays: which
    hand-off (kernel to copy engine and back) costs the device, one piece at a time."""
    pinned = torch.zeros(4096, dtype=torch.long, pin_memory=True)
    picks_host = torch.zeros(256, dtype=torch.long, pin_memory=True)
    staged = torch.zeros(4096, dtype=torch.long, device="cuda")
    logits = torch.randn(256, 50257, dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()
    state: dict[str, torch.Tensor] = {}

    def argmax():
        state["picks"] = logits.argmax(dim=-1)

    def readback():
        picks_host.copy_(state["picks"], non_blocking=True)

    def readback_on_side():
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            picks_host.copy_(state["picks"], non_blocking=True)

    def upload():
        staged.copy_(pinned, non_blocking=True)

    def feed():  # a device-to-device copy: the copy engine
        staged[:256].copy_(staged[1024:1280])

    def feed_by_kernel():  # the same bytes moved by an elementwise kernel
        torch.mul(staged[1024:1280], 1, out=staged[:256])

    variants = {
        "nothing": [],
        "argmax": [argmax],
        "argmax, read back": [argmax, readback],
        "upload": [upload],
        "device-to-device copy": [feed],
        "argmax, read back, upload, device-to-device copy (the engine's step)": [
            argmax,
            readback,
            upload,
            feed,
        ],
        "argmax, read back, upload, copy by kernel": [argmax, readback, upload, feed_by_kernel],
        "argmax, read back on a side stream, upload, copy by kernel": [
            argmax,
            readback_on_side,
            upload,
            feed_by_kernel,
        ],
        "argmax, read back on a side stream, copy by kernel (upload elsewhere)": [
            argmax,
            readback_on_side,
            feed_by_kernel,
        ],
    }
    print("| queued between replays | device us a replay |")
    print("|---|---|")
    for name, pieces in variants.items():
        for piece in pieces:  # warm
            piece()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            for piece in pieces:
                piece()
            graph.replay()
        end.record()
        end.synchronize()
        print(f"| {name} | {start.elapsed_time(end) * 1e3 / replays:.1f} |")


def print_gaps(events, steps: int, top: int = 10) -> None:
    """The device's idle time by the pair of operations it falls between: which hand-offs
    (kernel to copy, copy to graph...) the step pays for."""
    gaps: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    ordered = sorted(events, key=lambda e: e.time_range.start)
    end, before = ordered[0].time_range.end, ordered[0].name
    for e in ordered[1:]:
        if e.time_range.start > end:
            gaps[(before[:40], e.name[:40])].append(e.time_range.start - end)
        if e.time_range.end >= end:
            end, before = e.time_range.end, e.name
    print("| idle between | and | us a step | gaps a step |")
    print("|---|---|---|---|")
    for (a, b), spans in sorted(gaps.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"| {a} | {b} | {sum(spans) / steps:.1f} | {len(spans) / steps:.1f} |")


def host_parts(llm: LLM, batch: int, kind: str) -> None:
    """Host microseconds of a chained step by part (building the next step, launching it,
    waiting for the device, reading the last one), medians over steady decode, no profiler:
    a host that waits most of the step is not what bounds it."""
    chain = llm.engine.chain
    parts: dict[str, list[float]] = {"build": [], "launch": [], "wait": [], "read": []}
    methods = {"build": "_next", "launch": "_launch", "read": "_collect"}
    originals = {name: getattr(chain, method) for name, method in methods.items()}

    def timed(name):
        def call(*args):
            start = time.perf_counter()
            if name == "read" and args[0].ready is not None:
                args[0].ready.synchronize()
                parts["wait"].append(time.perf_counter() - start)
                start = time.perf_counter()
            result = originals[name](*args)
            parts[name].append(time.perf_counter() - start)
            return result

        return call

    for name, method in methods.items():
        setattr(chain, method, timed(name))
    try:
        engine = llm.engine
        params = SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True, output_kind=kind)
        vocab = engine.model_config.vocab_size
        for prompt, _ in make_requests(batch, (128, 128), (1, 1), vocab, seed=batch):
            engine.add_request(prompt, params)
        while engine.has_unfinished:
            engine.step()
    finally:
        for method in methods.values():
            delattr(chain, method)  # the class's methods again
    print(f"\nhost a chained step at batch {batch}, us (median): " + ", ".join(
        f"{name} {statistics.median(v) * 1e6:.0f}" for name, v in parts.items() if v
    ))  # fmt: skip


def profile_batch(llm: LLM, batch: int, kind: str, steps: int) -> None:
    engine = llm.engine
    vocab = engine.model_config.vocab_size
    params = SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True, output_kind=kind)
    for prompt, _ in make_requests(batch, (128, 128), (1, 1), vocab, seed=batch):
        engine.add_request(prompt, params)
    while not (
        len(engine.scheduler.running) == batch
        and all(len(r.output_token_ids) > 8 for r in engine.scheduler.running)
    ):
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    while engine.has_unfinished:
        engine.step()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not events:
        print(f"batch {batch}: the profiler saw no device events")
        return
    spans = [(e.time_range.start, e.time_range.end) for e in events]
    first, last = min(s for s, _ in spans), max(t for _, t in spans)
    busy = busy_union(spans)
    by_name: dict[str, float] = collections.defaultdict(float)
    for e in events:
        by_name[e.name[:70]] += e.time_range.end - e.time_range.start
    period = (last - first) / steps
    print(f"\n## batch {batch}, {kind}: {steps} steps profiled")
    print(f"device span a step {period:.1f} us; busy {busy / steps:.1f} us; "
          f"idle {(last - first - busy) / steps:.1f} us")  # fmt: skip
    print("| device work | us a step | share of the span |")
    print("|---|---|---|")
    for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:25]:
        print(f"| {name} | {us / steps:.1f} | {us / (last - first):.1%} |")
    print_gaps(events, steps)
    host = collections.defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CPU and e.name.startswith(("aten::", "cuda")):
            host[e.name] += e.cpu_time_total
    top = sorted(host.items(), key=lambda kv: -kv[1])[:12]
    print("host calls (us a step, inclusive): " + ", ".join(f"{n} {t / steps:.0f}" for n, t in top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="128,256")
    parser.add_argument("--kind", default="final_only")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--launch-only", action="store_true", help="the launch tests alone")
    args = parser.parse_args()
    ensure_cuda_adapter()
    launch_test()
    if args.launch_only:
        return
    folder = make_gpt2(Path(tempfile.mkdtemp()) / "gpt2")
    llm = LLM(folder, device="cuda", dtype=torch.bfloat16, max_num_seqs=256)
    for batch in (int(b) for b in args.batches.split(",")):
        profile_batch(llm, batch, args.kind, 8)  # warm: captures the graphs
        host_parts(llm, batch, args.kind)
        profile_batch(llm, batch, args.kind, args.steps)


if __name__ == "__main__":
    main()
