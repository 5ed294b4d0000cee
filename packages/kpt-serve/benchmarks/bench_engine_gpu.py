"""The issue's GPU benchmark, every baseline measured in the same run (one CUDA device).

  (a) offline: 2,000 mixed requests (prompts 32-512 tokens, outputs 16-256) through the
      engine, against Hugging Face generate with static left-padded batches of 128 on the
      first --hf-requests of the same requests (each batch runs to its longest output; only
      requested tokens count), compared as output tokens per second;
  (b) steady decode at 128 and 256 sequences (128-token prompts, 128 new tokens) against a
      static-cache decoder of our own: the same weights, a preallocated [B, heads, 256, dim]
      cache, the decode step captured in a CUDA graph (prefill eager);
  (c) the engine's step time at steady decode next to the bare forward of the same batch
      (its captured graph replayed alone, timed at four points of the decode and compared with
      the steps around each, since the forward grows with the context), for each output kind:
      every step's whole output (cumulative), only the new tokens (delta: what the fleet's
      workers stream), and the final output only (what LLM.generate asks for);
  (d) speculative decoding at batch 1: TPOT of the engine with a draft model against the same
      engine without one. The draft is the target's first --draft-layers layers (same
      embeddings, final norm and head); in the target, the residual contributions of the layers
      after those are scaled by --late-scale, so that a random-weight target has a draft that
      agrees with it (a trained model and its distilled draft agree for other reasons). The
      agreement is measured by teacher forcing on the target's own greedy output.

GPT-2-small-sized models (12 layers, 768 wide, vocabulary 50,257), random weights, bf16.

  python benchmarks/bench_engine_gpu.py              # on a CUDA machine (a few minutes)
  python benchmarks/bench_engine_gpu.py --quick      # a smaller workload, to try the script
  python benchmarks/bench_engine_gpu.py --sections decode --no-freeze-gc   # one section, the
                                                     # collector's heap left unfrozen
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

import kpt.hal as hal
from kpt.serve import LLM, SamplingParams


def ensure_cuda_adapter() -> None:
    """Running from a source tree (PYTHONPATH), the nvidia adapter's entry point is not
    installed: register it by hand."""
    try:
        hal.device("cuda")
    except KeyError:
        from kpt.adapters.nvidia import NvidiaAdapter

        hal.register_adapter(NvidiaAdapter)
        hal.refresh()


def make_gpt2(folder: Path, layers=12, late_scale=None, keep=2) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=768, n_head=12, n_positions=1024)
    model = transformers.GPT2LMHeadModel(config)
    if late_scale is not None:
        with torch.no_grad():
            for block in model.transformer.h[keep:]:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    proj.weight.mul_(late_scale)
                    proj.bias.mul_(late_scale)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_draft(target: Path, folder: Path, layers: int) -> Path:
    """The target's first `layers` layers with its embeddings, final norm and head."""
    import transformers

    full = transformers.GPT2LMHeadModel.from_pretrained(target)
    config = transformers.GPT2Config(**{**full.config.to_dict(), "n_layer": layers})
    draft = transformers.GPT2LMHeadModel(config)
    missing, _ = draft.load_state_dict(full.state_dict(), strict=False)
    assert not [k for k in missing if "attn.bias" not in k], missing
    draft.save_pretrained(folder, safe_serialization=True)
    return folder


def make_requests(count, prompt_range, output_range, vocab, seed=0):
    rng = random.Random(seed)
    return [
        (
            [rng.randrange(vocab) for _ in range(rng.randint(*prompt_range))],
            rng.randint(*output_range),
        )
        for _ in range(count)
    ]


def hf_static(model, requests, batch) -> tuple[float, int]:
    useful, start = 0, time.perf_counter()
    for i in range(0, len(requests), batch):
        chunk = requests[i : i + batch]
        width = max(len(p) for p, _ in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prompt, _) in enumerate(chunk):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        new = max(n for _, n in chunk)
        with torch.no_grad():
            model.generate(
                ids.cuda(),
                attention_mask=mask.cuda(),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )
        useful += sum(n for _, n in chunk)
    torch.cuda.synchronize()
    return time.perf_counter() - start, useful


def engine_offline(llm, requests) -> tuple[float, int]:
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for _, n in requests]
    torch.cuda.synchronize()
    start = time.perf_counter()
    outs = llm.generate([p for p, _ in requests], params)
    torch.cuda.synchronize()
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outs)


class CollectorPauses:
    """Milliseconds the garbage collector held the interpreter, by generation, while on."""

    def __init__(self) -> None:
        self.ms = {0: 0.0, 1: 0.0, 2: 0.0}
        self.count = {0: 0, 1: 0, 2: 0}
        self._started = 0.0

    def __enter__(self):
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._note)

    def _note(self, phase, info) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.ms[generation] += (time.perf_counter() - self._started) * 1e3
        self.count[generation] += 1

    def __str__(self) -> str:
        return ", ".join(f"gen{g}: {self.count[g]} in {self.ms[g]:.0f} ms" for g in self.ms)


# Where in the decode the bare forward is timed, as shares of its steps. The forward grows with
# the context (attention reads every cached token), so each timing is compared with the steps
# around it, not with the median of the whole decode.
FORWARD_AT = (0.125, 0.375, 0.625, 0.875)
PAIR_WINDOW = 8  # steps each side of a timing that it is compared with


def engine_steady(llm, batch, prompt_len, new, vocab, seed, kind="cumulative"):
    """(decode tok/s, median step ms, bare forward ms, step / forward) once all `batch`
    requests decode. step / forward is the median, over the FORWARD_AT points, of the median
    step near a point against the forward timed there (the same batch and context)."""
    engine = llm.engine
    graphs = engine.runner.graphs
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True, output_kind=kind)
    for prompt, _ in make_requests(batch, (prompt_len,) * 2, (new,) * 2, vocab, seed=seed):
        engine.add_request(prompt, params)
    points = {max(int(new * share), 1) for share in FORWARD_AT}
    steps: dict[int, float] = {}  # decode step index -> seconds
    forward_ms: dict[int, float] = {}
    index, skip, decoding = 0, False, False
    with CollectorPauses() as pauses:
        while engine.has_unfinished:
            start = time.perf_counter()
            engine.step()
            elapsed = time.perf_counter() - start
            if decoding:
                index += 1
                # The step after a timing reads a step the device ran during the timing
                # (untimed), so it is left out, its tokens with it.
                if not skip:
                    steps[index] = elapsed
                skip = False
                if index in points and graphs is not None and engine.has_unfinished:
                    forward_ms[index] = graphs.time_last_replay()
                    skip = True
            # The first step in which every request emits may still hold a prompt chunk.
            running = engine.scheduler.running
            decoding = decoding or (
                len(running) == batch and all(r.output_token_ids for r in running)
            )
    if not steps:
        raise RuntimeError(f"no step had all {batch} requests decoding; raise new tokens")
    rate = batch * len(steps) / sum(steps.values())
    median = statistics.median(steps.values())
    ratios, pairs = [], []
    for point, fwd in sorted(forward_ms.items()):
        near = [t for i, t in steps.items() if abs(i - point) <= PAIR_WINDOW]
        ratios.append(statistics.median(near) * 1e3 / fwd)
        pairs.append(f"{point}: {fwd:.3f} ({ratios[-1]:.3f})")
    slow = [t for t in steps.values() if t > 3 * median]
    print(  # the mean and the median can tell different stories: say where the time went
        f"<!-- batch {batch}, {kind}: {len(slow)} of {len(steps)} steps over 3x the median"
        f"{f', {sum(slow) * 1e3:.0f} ms in all, longest {max(slow) * 1e3:.0f} ms' if slow else ''}"
        f"; mean step {statistics.mean(steps.values()) * 1e3:.2f} ms; bare forward ms at step "
        f"(step / forward there): {', '.join(pairs)}; garbage collector ({pauses}), "
        f"heap frozen: {gc.get_freeze_count()} objects -->"
    )
    nan = float("nan")
    fwd = statistics.median(forward_ms.values()) if forward_ms else nan
    return rate, median * 1e3, fwd, statistics.median(ratios) if ratios else nan


class StaticCacheDecoder:
    """GPT-2 decoding a static batch: preallocated cache, decode step in a CUDA graph."""

    def __init__(self, model, batch: int, max_len: int) -> None:
        self.m = model
        cfg = model.config
        w = model.wte.weight
        shape = (batch, cfg.num_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in model.h]
        self.v = [torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in model.h]
        self.keys = torch.arange(max_len, device=w.device)
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=w.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=w.device)
        self.graph = None

    def _forward(self, ids, pos):
        m, cfg = self.m, self.m.config
        b, t = ids.shape
        x = m.wte(ids) + m.wpe(pos)[None]
        mask = self.keys[None, :] <= pos[:, None]
        for i, block in enumerate(m.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(cfg.hidden_size, dim=-1)
            q, k, v = (z.view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2) for z in (q, k, v))
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            a = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask)
            x = x + block.attn.c_proj(a.transpose(1, 2).reshape(b, t, cfg.hidden_size))
            x = x + block.mlp(block.ln_2(x))
        return m.lm_head(m.ln_f(x[:, -1]))

    def _step(self):
        self.ids.copy_(self._forward(self.ids, self.pos).argmax(-1, keepdim=True))
        self.pos.add_(1)

    @torch.no_grad()
    def run(self, prompts: torch.Tensor, new: int) -> float:
        """Prefill eagerly, then decode `new` tokens by graph replays; decode tok/s."""
        plen = prompts.shape[1]
        self.ids.copy_(
            self._forward(prompts, torch.arange(plen, device=prompts.device)).argmax(
                -1, keepdim=True
            )
        )
        self.pos.fill_(plen)
        if self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._step()  # warm-up, outside capture
            torch.cuda.current_stream().wait_stream(side)
            self.pos.fill_(plen)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._step()
            self.pos.fill_(plen)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(new - 1):
            self.graph.replay()
        torch.cuda.synchronize()
        return prompts.shape[0] * (new - 1) / (time.perf_counter() - start)


def spec_tpot(llm, prompt, new, repeats=3) -> float:
    """Median TPOT ms of one request alone (batch 1)."""
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    tpots = []
    for r in range(repeats):
        out = llm.generate([prompt[r:] + prompt[:r]], params)[0]
        tpots.append((out.latency_ms - out.ttft_ms) / (len(out.token_ids) - 1))
    return statistics.median(tpots)


def agreement(target_dir, draft_dir, tokens: list[int], prompt_len: int) -> float:
    """Share of the target's greedy tokens the draft predicts from the same prefix."""
    import transformers

    load = transformers.AutoModelForCausalLM.from_pretrained
    ids = torch.tensor([tokens], device="cuda")
    with torch.no_grad():
        t = load(target_dir, dtype=torch.bfloat16).cuda().eval()(ids).logits.argmax(-1)
        d = load(draft_dir, dtype=torch.bfloat16).cuda().eval()(ids).logits.argmax(-1)
    return (t[0, prompt_len - 1 : -1] == d[0, prompt_len - 1 : -1]).float().mean().item()


def section(name, fn):
    try:
        fn()
    except Exception:  # keep going: one run on the GPU should report every section it can
        print(f"\n## {name}: FAILED\n```\n{traceback.format_exc()}```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload")
    parser.add_argument("--hf-requests", type=int, default=256)
    parser.add_argument("--draft-layers", type=int, default=2)
    parser.add_argument("--late-scale", type=float, default=0.03)
    parser.add_argument("--spec-tokens", type=int, default=6)
    parser.add_argument(
        "--sections", default="decode,speculative,offline", help="sections to run, comma-separated"
    )
    parser.add_argument(
        "--no-freeze-gc", action="store_true", help="engines leave the heap to the collector"
    )
    args = parser.parse_args()
    freeze = {"freeze_gc": False} if args.no_freeze_gc else {}
    ensure_cuda_adapter()
    import transformers

    n_req, hf_n = (300, 128) if args.quick else (2000, args.hf_requests)
    batches = (128,) if args.quick else (128, 256)
    dtype = torch.bfloat16
    tmp = Path(tempfile.mkdtemp())
    target = make_gpt2(tmp / "gpt2")
    print(
        f"# kpt-serve bench_engine_gpu: GPT-2-small-sized (12x768), random weights, bf16, "
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    llm = LLM(target, device="cuda", dtype=dtype, max_num_seqs=256, **freeze)
    vocab = llm.engine.model_config.vocab_size

    def offline():
        requests = make_requests(n_req, (32, 512), (16, 256), vocab)
        t = time.perf_counter()
        engine_offline(
            llm, make_requests(400 if not args.quick else 100, (32, 512), (16, 256), vocab, seed=9)
        )
        warm = time.perf_counter() - t
        chain = llm.engine.chain
        steps0, chained0 = llm.engine.stats().num_steps, chain.chained_steps if chain else 0
        eng_s, eng_tokens = engine_offline(llm, requests)
        graphs = llm.engine.runner.graphs
        hf = transformers.AutoModelForCausalLM.from_pretrained(target, dtype=dtype).cuda().eval()
        hf_static(hf, requests[:2], 2)
        hf_s, hf_tokens = hf_static(hf, requests[:hf_n], 128)
        del hf
        hf_rate, eng_rate = hf_tokens / hf_s, eng_tokens / eng_s
        print("\n## (a) offline: prompts 32-512, outputs 16-256 tokens, mixed")
        print("| system | requests | output tokens | seconds | output tok/s | ratio |")
        print("|---|---|---|---|---|---|")
        print(
            f"| HF generate, static batches of 128 | {hf_n} | {hf_tokens} | {hf_s:.2f} | "
            f"{hf_rate:,.0f} | 1.00 |"
        )
        print(
            f"| kpt-serve engine | {n_req} | {eng_tokens} | {eng_s:.2f} | {eng_rate:,.0f} | "
            f"{eng_rate / hf_rate:.2f} |"
        )
        s = llm.engine.stats()
        print(
            f"\nwarm-up {warm:.1f} s ({graphs.num_graphs if graphs else 0} CUDA graphs captured in "
            f"{graphs.capture_seconds if graphs else 0:.1f} s); "
            f"KV pool {s.kv_blocks_total} blocks; "
            f"preemptions {s.num_preemptions}; steps {s.num_steps - steps0}, of which chained "
            f"{(chain.chained_steps if chain else 0) - chained0}"
        )

    def decode():
        print("\n## (b, c) steady decode: 128-token prompts, 128 new tokens")
        print(
            "| batch | static-cache CUDA-graph decoder tok/s | engine: output kind | "
            "engine tok/s | ratio | engine step ms | bare forward ms (graph replay) | "
            "step / forward (same context) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        unchained = LLM(
            target, device="cuda", dtype=dtype, max_num_seqs=256, async_decode=False, **freeze
        )
        kinds = (
            (llm, "cumulative"),
            (llm, "delta"),
            (llm, "final_only"),
            (unchained, "cumulative"),  # steps not chained: each one's tokens read before the next
        )
        for batch in batches:
            prompts = torch.tensor(
                [p for p, _ in make_requests(batch, (128, 128), (1, 1), vocab, seed=batch)],
                device="cuda",
            )
            static = StaticCacheDecoder(llm.engine.runner.model, batch, 256)
            static.run(prompts, 128)
            base = static.run(prompts, 128)
            del static
            for engine, kind in kinds:
                engine_steady(engine, batch, 128, 48, vocab, seed=batch + 1, kind=kind)  # warm
                rate, step_ms, fwd_ms, ratio = engine_steady(
                    engine, batch, 128, 128, vocab, seed=batch, kind=kind
                )
                label = kind if engine is llm else f"{kind}, steps not chained"
                print(
                    f"| {batch} | {base:,.0f} | {label} | {rate:,.0f} | {rate / base:.2f} | "
                    f"{step_ms:.2f} | {fwd_ms:.2f} | {ratio:.2f} |"
                )
        del unchained

    def speculative():
        scaled = make_gpt2(tmp / "scaled", late_scale=args.late_scale, keep=args.draft_layers)
        draft = make_draft(scaled, tmp / "draft", args.draft_layers)
        prompt = make_requests(1, (128, 128), (1, 1), vocab, seed=5)[0][0]
        plain = LLM(scaled, device="cuda", dtype=dtype, max_num_seqs=8)
        spec = LLM(
            scaled,
            device="cuda",
            dtype=dtype,
            max_num_seqs=8,
            speculative_model=str(draft),
            speculative_tokens=args.spec_tokens,
        )
        spec_tpot(plain, prompt, 32, 1), spec_tpot(spec, prompt, 32, 1)  # warm-up, capture
        base = spec_tpot(plain, prompt, 128)
        fast = spec_tpot(spec, prompt, 128)
        out = plain.generate(
            [prompt], SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
        )
        same = spec.generate(
            [prompt], SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
        )
        agree = agreement(scaled, draft, prompt + out[0].token_ids, len(prompt))
        st = spec.engine.stats()
        print(
            f"\n## (d) speculative decoding, batch 1: 128-token prompt, 128 new tokens; draft = "
            f"first {args.draft_layers} layers, later layers' residual contributions "
            f"x{args.late_scale} "
            f"in the target; k = {args.spec_tokens}"
        )
        print("| engine | TPOT ms | speedup | draft agreement | acceptance rate | outputs equal |")
        print("|---|---|---|---|---|---|")
        print(f"| plain greedy | {base:.3f} | 1.00 | | | |")
        print(
            f"| with draft model | {fast:.3f} | {base / fast:.2f} | {agree:.1%} | "
            f"{st.draft_acceptance_rate:.1%} | {same[0].token_ids == out[0].token_ids} |"
        )

    chosen = args.sections.split(",")
    for name, fn in (("decode", decode), ("speculative", speculative), ("offline", offline)):
        if name in chosen:
            section(name, fn)


if __name__ == "__main__":
    main()
