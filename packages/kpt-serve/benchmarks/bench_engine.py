"""Engine throughput against Hugging Face generate with static batches, in the same run.

Prints two tables:
  offline   mixed requests (prompt and output lengths drawn per request): the engine serves
            them all with continuous batching; `generate` runs static left-padded batches of
            --hf-batch on the same requests (the first --hf-requests of them, to bound time),
            each batch running until its longest output is done. Useful output tok/s, ratio.
  decode    B prompts of --decode-prompt tokens, --decode-new new tokens each, for each B in
            --decode-batches: generate's tok/s, the engine's, and the engine's step time at
            steady decode next to the model forward alone (scheduling overhead).
The model is GPT-2-small-sized with random weights (12 layers, 768 wide, vocabulary 50,257)
unless --tiny, which the CPU default uses so that the script finishes on a laptop.

  python benchmarks/bench_engine.py                     # CPU, tiny model, small workload
  python benchmarks/bench_engine.py --device cuda --dtype bfloat16 --full
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kpt.serve import LLM, SamplingParams


def make_model(folder: Path, tiny: bool) -> Path:
    import transformers  # the bench extra: the baseline and the random-weight model

    torch.manual_seed(0)
    if tiny:
        config = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, n_positions=1024)
    else:
        config = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hf_static(model, requests, batch, device) -> tuple[float, int]:
    """Seconds and useful output tokens of generate over static left-padded batches."""
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
                ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )
        useful += sum(n for _, n in chunk)
    sync(device)
    return time.perf_counter() - start, useful


def engine_run(llm, requests, device) -> tuple[float, int]:
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for _, n in requests]
    sync(device)
    start = time.perf_counter()
    outs = llm.generate([p for p, _ in requests], params)
    sync(device)
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outs)


def steady_decode(llm, batch, prompt_len, new, vocab, device):
    """(tok/s, median engine step ms, median forward ms) with every request decoding."""
    engine = llm.engine
    forward_ms: list[float] = []
    run = engine.runner.run

    def timed_run(work):
        sync(device)
        t = time.perf_counter()
        result = run(work)
        sync(device)
        if all(len(w.token_ids) == 1 for w in work) and len(work) == batch:
            forward_ms.append((time.perf_counter() - t) * 1e3)
        return result

    requests = make_requests(batch, (prompt_len, prompt_len), (new, new), vocab, seed=batch)
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    for prompt, _ in requests:
        engine.add_request(prompt, params)
    step_ms: list[float] = []
    produced, start = 0, time.perf_counter()
    engine.runner.run = timed_run
    try:
        while engine.has_unfinished:
            t = time.perf_counter()
            outs = engine.step()
            if len(outs) == batch and engine.stats().num_running == batch:
                step_ms.append((time.perf_counter() - t) * 1e3)
            produced += len(outs)
    finally:
        engine.runner.run = run
    elapsed = time.perf_counter() - start
    # Timing the forward alone needs a sync around it; time the throughput without that, on
    # fresh prompts (the first pass left its prompts in the prefix cache).
    requests = make_requests(batch, (prompt_len, prompt_len), (new, new), vocab, seed=-batch)
    for prompt, _ in requests:
        engine.add_request(prompt, params)
    sync(device)
    start = time.perf_counter()
    while engine.has_unfinished:
        engine.step()
    sync(device)
    elapsed = time.perf_counter() - start
    return produced / elapsed, statistics.median(step_ms), statistics.median(forward_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: fp32 on cpu)")
    parser.add_argument("--full", action="store_true", help="the issue's workload (GPU)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 128-wide GPT-2")
    parser.add_argument("--requests", type=int, help="offline requests (override)")
    parser.add_argument("--hf-requests", type=int, help="of those, how many generate runs")
    parser.add_argument("--decode-batches", help="comma-separated batch sizes (override)")
    args = parser.parse_args()
    on_cpu = args.device == "cpu"
    tiny = args.tiny or (on_cpu and not args.full)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.full:
        n_req, prompts, outputs, hf_n, hf_batch = 2000, (32, 512), (16, 256), 512, 128
        decode_batches, decode_prompt, decode_new = (1, 128, 256), 128, 128
    else:
        n_req, prompts, outputs, hf_n, hf_batch = 64, (16, 128), (8, 48), 64, 16
        decode_batches, decode_prompt, decode_new = (1, 16), 32, 32
    n_req = args.requests or n_req
    hf_n = min(args.hf_requests or hf_n, n_req)
    if args.decode_batches:
        decode_batches = tuple(int(b) for b in args.decode_batches.split(","))
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp), tiny)
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
        hf = hf.to(args.device).eval()
        llm = LLM(folder, device=args.device, dtype=dtype, max_num_seqs=256)
        vocab = llm.engine.model_config.vocab_size
        requests = make_requests(n_req, prompts, outputs, vocab)
        engine_run(llm, requests[:8], args.device)  # warm-up
        hf_static(hf, requests[:2], 2, args.device)
        hf_s, hf_tokens = hf_static(hf, requests[:hf_n], hf_batch, args.device)
        eng_s, eng_tokens = engine_run(llm, requests, args.device)
        model = "tiny GPT-2 (2x128)" if tiny else "GPT-2-small-sized (12x768)"
        print(
            f"# kpt-serve bench_engine: {model}, random weights, {llm.engine.dtype}, "
            f"device {args.device} ({torch.__version__})"
        )
        print(
            f"\n## offline: prompts {prompts[0]}-{prompts[1]}, "
            f"outputs {outputs[0]}-{outputs[1]} tokens"
        )
        print("| system | requests | output tokens | seconds | output tok/s | ratio |")
        print("|---|---|---|---|---|---|")
        hf_rate, eng_rate = hf_tokens / hf_s, eng_tokens / eng_s
        print(
            f"| HF generate, static batches of {hf_batch} | {hf_n} | {hf_tokens} | "
            f"{hf_s:.2f} | {hf_rate:,.0f} | 1.00 |"
        )
        print(
            f"| kpt-serve engine | {n_req} | {eng_tokens} | {eng_s:.2f} | {eng_rate:,.0f} | "
            f"{eng_rate / hf_rate:.2f} |"
        )
        print(f"\n## steady decode: {decode_prompt}-token prompts, {decode_new} new tokens")
        print(
            "| batch | HF generate tok/s | engine tok/s | ratio | engine step ms | "
            "forward ms | step / forward |"
        )
        print("|---|---|---|---|---|---|---|")
        for batch in decode_batches:
            reqs = make_requests(batch, (decode_prompt,) * 2, (decode_new,) * 2, vocab, seed=batch)
            hf_s, hf_tokens = hf_static(hf, reqs, batch, args.device)
            rate, step_ms, fwd_ms = steady_decode(
                llm, batch, decode_prompt, decode_new, vocab, args.device
            )
            print(
                f"| {batch} | {hf_tokens / hf_s:,.0f} | {rate:,.0f} | "
                f"{rate / (hf_tokens / hf_s):.2f} | {step_ms:.2f} | {fwd_ms:.2f} | "
                f"{step_ms / fwd_ms:.2f} |"
            )
        stats = llm.engine.stats()
        print(
            f"\nKV pool {stats.kv_blocks_total} blocks of 16; preemptions {stats.num_preemptions}; "
            f"prefix hit rate {stats.prefix_hit_rate:.1%}"
        )


if __name__ == "__main__":
    main()
