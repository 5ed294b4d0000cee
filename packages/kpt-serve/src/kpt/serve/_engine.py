"""Engine: one model on one kpt device, driven step by step (add_request / step / abort / stats)."""

from __future__ import annotations

import gc
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import kpt.hal as hal
from kpt.serve._batch import SeqWork
from kpt.serve._chain import DecodeChain
from kpt.serve._clock import DeviceClock
from kpt.serve._config import ModelConfig, load_config
from kpt.serve._draft import DraftProposer
from kpt.serve._kv_cache import BlockPool, KVCacheManager
from kpt.serve._loader import dummy_model, load_model
from kpt.serve._logprobs import step_logprobs
from kpt.serve._models import KVCache
from kpt.serve._quantize import check_quantization, fp8_dtype
from kpt.serve._request import Request, RequestOutput, RequestStatus
from kpt.serve._runner import ModelRunner, make_runner
from kpt.serve._sampling import OutputKind, Sampler, SamplingParams
from kpt.serve._scheduler import Scheduler, SchedulerConfig
from kpt.serve._sizing import check_weights_fit, kv_blocks_for
from kpt.serve._tokenizer import Tokenizer


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_kv_blocks: int | None = None  # None: from the device's free memory (kv_memory_fraction)
    kv_memory_fraction: float | None = None  # None: 0.9 on accelerators, 0.1 of host memory
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    chunked_prefill: bool = True
    prefix_caching: bool = True
    dtype: torch.dtype | None = None  # None: the checkpoint's dtype (bf16 kept, fp32 on CPU)
    max_model_len: int | None = None  # None: the model's max position
    seed: int = 0  # seeds requests that give no seed of their own
    # Speculative decoding by n-gram (prompt lookup): up to this many tokens proposed per step
    # for greedy requests and verified in the same step; 0 turns it off.
    speculative_tokens: int = 0
    speculative_ngram: int = 3  # how many final tokens to look up earlier in the sequence
    # A draft model folder (same tokenizer and vocabulary, fewer layers): it proposes the
    # speculative tokens instead of the n-gram lookup. Needs speculative_tokens > 0.
    speculative_model: str | Path | None = None
    # "auto": the Triton paged kernel on CUDA, PyTorch SDPA elsewhere; "torch" or "triton"
    # force one ("triton" on the CPU needs TRITON_INTERPRET=1: it is how tests check it).
    attention: str = "auto"
    # None: CUDA graphs per bucket of (tokens, sequences) on CUDA with Triton attention, and
    # on a simulated chip (kpt_sim) each forward timed as the graph replay CUDA would run.
    # True elsewhere runs the same padded fixed buffers eagerly (what the CPU tests check);
    # False: eager launches everywhere (on kpt_sim, timed as eager launches).
    cuda_graphs: bool | None = None
    # None: on CUDA with graphs, decode steps in which every request decodes one greedy token
    # are chained: the next launches before this one's tokens are read, so the host's work
    # overlaps the device's (outputs come one step() later). True forces it anywhere.
    async_decode: bool | None = None
    # None: on CUDA. Once started, the engine collects and freezes the process's heap
    # (gc.freeze(), as vLLM does): the collector's full passes then skip the ~450,000 objects
    # of torch and the other libraries, each of which stalled a millisecond decode step for
    # 100+ ms. The engine itself holds no reference cycle, so dropping it still frees it.
    freeze_gc: bool | None = None
    # "safetensors": the folder's checkpoint. "dummy": random weights made on the device from
    # config.json alone (as vLLM's load_format), for benchmarks and timing-only simulation.
    load_format: str = "safetensors"
    # None: weights in `dtype`. "int8": int8 weight-only (one scale per output channel).
    # "fp8": float8 weights and activations, one scale per tensor (devices that offer fp8).
    # Embeddings, norms and the LM head stay in `dtype` (see _quantize.py).
    quantization: str | None = None

    def __post_init__(self) -> None:
        if self.load_format not in ("safetensors", "dummy"):
            raise ValueError(
                f"load_format={self.load_format!r} must be 'safetensors' (the folder's "
                "checkpoint) or 'dummy' (random weights from config.json)"
            )
        if self.attention not in ("auto", "torch", "triton"):
            raise ValueError(f"attention={self.attention!r} must be 'auto', 'torch' or 'triton'")
        if self.speculative_model is not None and self.speculative_tokens < 1:
            raise ValueError(
                f"speculative_model={str(self.speculative_model)!r} needs speculative_tokens "
                ">= 1 (how many tokens the draft proposes per step)"
            )


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_usage: float
    prefix_hit_rate: float
    num_preemptions: int
    num_steps: int
    prompt_tokens_computed: int
    generated_tokens: int
    clock_ms: float
    draft_tokens_proposed: int = 0
    draft_tokens_accepted: int = 0

    @property
    def draft_acceptance_rate(self) -> float:
        proposed = self.draft_tokens_proposed
        return (
            self.draft_tokens_accepted / proposed if proposed else 0.0
        )  # the device clock: simulated ms on a simulated device


class Engine:
    """Continuous batching over a paged KV cache. Not thread-safe: one caller drives it."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str | torch.device | None = None,
        config: EngineConfig | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.device_info = hal.select() if device is None else hal.device(device)
        self.device = self.device_info.torch_device
        self.model_config: ModelConfig = load_config(model_dir)
        self.dtype = self.config.dtype or _default_dtype(self.model_config, self.device)
        self.max_model_len = min(
            self.config.max_model_len or self.model_config.max_position,
            self.model_config.max_position,
        )
        quantization = self.config.quantization
        check_quantization(quantization, self.dtype, self.device_info.capabilities.features)
        check_weights_fit(self, model_dir)
        if self.config.load_format == "dummy":
            model = dummy_model(
                self.model_config, self.dtype, self.device, self.config.seed, quantization
            )
        else:
            model = load_model(model_dir, self.model_config, self.dtype, self.device, quantization)
        num_blocks = kv_blocks_for(self)
        cache = KVCache(
            self.model_config, num_blocks, self.config.block_size, self.dtype, self.device
        )
        self.runner = self._make_runner(model, cache)
        self.drafter = (
            DraftProposer(self, self.config.speculative_model, num_blocks)
            if self.config.speculative_model is not None
            else None
        )
        chained = self.config.async_decode
        if chained is None:
            chained = self.runner.graphs is not None and self.device.type == "cuda"
        self.chain = DecodeChain(self) if chained and not self.config.speculative_tokens else None
        self.pool = BlockPool(num_blocks, self.config.block_size, self.config.prefix_caching)
        self.kv = KVCacheManager(self.pool)
        self.scheduler = Scheduler(
            SchedulerConfig(
                self.config.max_num_seqs,
                self.config.max_num_batched_tokens,
                self.config.chunked_prefill,
            ),
            self.kv,
            self.max_model_len,
        )
        self.tokenizer = Tokenizer.from_folder(model_dir)
        self.sampler = Sampler()
        self.clock = DeviceClock(self.device, self.device_info.capabilities.simulated)
        self._requests: dict[str, Request] = {}
        self._ids = itertools.count()
        self._arrivals = itertools.count()
        self._seeds = random.Random(self.config.seed)
        self._steps = self._prompt_tokens = self._generated = 0
        self._spec_proposed = self._spec_accepted = 0
        self.num_finished = 0  # requests ended (any reason): tells a decode chain to look
        freeze = self.config.freeze_gc
        if freeze if freeze is not None else self.device.type == "cuda":
            gc.collect()
            gc.freeze()

    # --- the interface -------------------------------------------------------------------

    def add_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        priority: int = 0,
        arrival_ms: float | None = None,
    ) -> str:
        """Queue a prompt (text needs the folder's tokenizer); returns its request id.

        arrival_ms: when it arrived on the engine's clock (default: now); TTFT and latency
        count from it. A virtual-time fleet passes the arrival it simulated."""
        params = params or SamplingParams()
        if params.stop and self.tokenizer is None:
            raise ValueError(
                f"stop strings {list(params.stop)!r} need the model folder's tokenizer.json to "
                "read the output as text; use stop_token_ids instead"
            )
        token_ids = self._prompt_ids(prompt)
        request_id = str(next(self._ids)) if request_id is None else request_id
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use; pass a new one")
        needed = min(len(token_ids) + params.max_tokens, self.max_model_len)
        capacity = self.pool.num_blocks * self.pool.block_size
        if needed > capacity:
            raise ValueError(
                f"request needs up to {needed} tokens of KV cache (prompt {len(token_ids)} + "
                f"max_tokens {params.max_tokens}) but the whole pool holds {capacity}; "
                "lower max_tokens or give the engine more KV blocks"
            )
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(63)
        generator = None if params.greedy else torch.Generator().manual_seed(seed)
        quiet = params.output_kind is OutputKind.FINAL_ONLY and not params.stop
        request = Request(
            request_id=request_id,
            prompt_token_ids=token_ids,
            params=params,
            priority=priority,
            arrival=next(self._arrivals),
            generator=generator,
            stop_ids=frozenset(params.stop_token_ids).union(
                () if params.ignore_eos else self.model_config.eos_token_ids
            ),
            max_output=min(params.max_tokens, self.max_model_len - len(token_ids)),
            quiet=quiet,
            arrival_ms=self.clock.now_ms() if arrival_ms is None else arrival_ms,
            # Text as it grows, for stop strings and streamed outputs; a final output's text
            # is decoded whole.
            text_stream=None if self.tokenizer is None or quiet else self.tokenizer.stream(),
        )
        if params.prompt_logprobs is not None:
            request.prompt_logprobs.append(None)  # the first prompt token has no context
        self._requests[request_id] = request
        self.scheduler.add(request)
        return request_id

    def step(self) -> list[RequestOutput]:
        """Run one batch: schedule, compute, sample. Returns an output for every request that
        produced tokens or finished in this step (tokens stream as they come)."""
        host_start = self.clock.host_time()
        if self.chain is not None and self.chain.inflight is not None:
            outputs = self.chain.advance()
            self.clock.charge_host(self.chain.host_seconds)
            return outputs
        if self.config.speculative_tokens:
            self._propose_drafts()
        batch = self.scheduler.schedule()
        if not batch.work:
            return []
        if self.chain is not None and self.chain.can_start(batch.work):
            # Every request decodes one greedy token: launch without reading the tokens;
            # the next step() launches the step after it, then reads these (DecodeChain).
            self.chain.start([request for request, _ in batch.work])
            self.clock.charge_host(self.clock.host_time() - host_start)
            return []
        work = []
        for request, count in batch.work:
            start = request.num_computed_tokens
            done = start + count == request.num_tokens + len(request.draft)
            samples = 1 + len(request.draft) if done else 0
            if request.needs_prompt_logprobs:
                samples = count  # each row's logits score the next prompt token
            work.append(
                SeqWork(
                    request.token_slice(start, count),
                    start,
                    self.kv.blocks(request.request_id),
                    samples,
                )
            )
        self.clock.charge_host(self.clock.host_time() - host_start)
        logits, spans = self.runner.run(work)
        emitted = self._pick_tokens(batch.work, logits, spans)
        scores = step_logprobs(batch.work, logits, spans, emitted)
        now = self.clock.now_ms()  # the sampled ids reached the host: the step is done
        host_start = self.clock.host_time()
        outputs: list[RequestOutput] = []
        for w, (request, count) in enumerate(batch.work):
            prompt_left = len(request.prompt_token_ids) - request.num_computed_tokens
            self._prompt_tokens += max(0, min(count, prompt_left))
            tokens = emitted.get(w)
            if tokens is None:  # a prompt chunk with more to come
                request.num_computed_tokens += count
                self._name_blocks(request)
                continue
            # Drafts past the first rejected one were computed but are not kept: their KV
            # slots are simply written over later.
            accepted = len(tokens) - 1
            self._spec_proposed += len(request.draft)
            self._spec_accepted += accepted
            request.num_computed_tokens += count - len(request.draft) + accepted
            if request.draft_computed > request.num_computed_tokens:
                # The draft model's KV is right only up to the last accepted token.
                request.draft_computed = request.num_computed_tokens
            request.draft = []
            output = self._emit(request, tokens, now, scores.get(w))
            if output is not None:
                outputs.append(output)
        self._steps += 1
        self.clock.charge_host(self.clock.host_time() - host_start)
        return outputs

    def _emit(
        self, request: Request, tokens: list[int], now: float, logprobs: list | None = None
    ) -> RequestOutput | None:
        """Append a request's new tokens (its KV already counted), stopping where it ends.
        Returns its output, or None when its output kind asks for none this step."""
        # Runs for every request at every step: at steady decode, the host's main work.
        if request.first_token_ms is None:
            request.first_token_ms = now
        # Blocks its computed tokens filled can serve later prompts, even if it ends now.
        self._name_blocks(request)
        output = request.output_token_ids
        before = len(output)
        finished = False
        for token in tokens:
            output.append(token)
            if request.text_stream is not None:
                request.text_stream.add(token)
            reason = request.check_stop(token)
            if reason is None and request.params.stop:
                reason = self._check_stop_strings(request)
            if reason is not None:
                self._finish(request, reason, now)
                finished = True
                break
        if logprobs is not None:
            request.logprobs += logprobs[: len(output) - before]
        self._generated += len(output) - before
        if not finished and request.params.output_kind is OutputKind.FINAL_ONLY:
            return None
        return self._output(request, output[before:])

    def _propose_drafts(self) -> None:
        """Drafts for greedy requests that are decoding: from the draft model, or n-gram."""
        candidates: list[tuple[Request, int]] = []
        for request in self.scheduler.running:
            if not request.params.greedy or request.num_computed_tokens != request.num_tokens - 1:
                continue
            room = min(
                request.max_output - len(request.output_token_ids) - 1,
                self.config.speculative_tokens,
            )
            if room > 0:
                candidates.append((request, room))
        if self.drafter is not None:
            self.drafter.propose(candidates)
            return
        for request, room in candidates:
            request.draft = request.propose_ngram(self.config.speculative_ngram, room)

    def _pick_tokens(self, work, logits, spans) -> dict[int, list[int]]:
        """The tokens each sampled request emits: one, or its accepted drafts plus one.

        Greedy picks for every row come from one argmax and one read to the host (the step's
        only sync); requests that sample read their probabilities once more. A span's sampling
        rows are its last 1 + drafts; rows before them only score prompt tokens, and a prompt
        chunk with more to come samples nothing.
        """
        emitting = [
            (i, first + rows - 1 - len(request.draft))
            for i, (w, first, rows) in enumerate(spans)
            if _emits(request := work[w][0], work[w][1])
        ]
        if not emitting:
            return {}
        requests = [work[spans[i][0]][0] for i, _ in emitting]
        greedy_rows = logits.argmax(dim=-1).cpu().tolist()
        sampled: dict[int, int] = {}
        random = [j for j, r in enumerate(requests) if not r.params.greedy]
        if random:
            last_rows = [emitting[j][1] + len(requests[j].draft) for j in random]
            final = logits.index_select(0, torch.tensor(last_rows).to(logits.device))
            picks = self.sampler.sample(
                final,
                [requests[j].params for j in random],
                [requests[j].generator for j in random],
            )
            sampled = dict(zip(random, picks, strict=True))
        emitted: dict[int, list[int]] = {}
        for j, ((i, first), request) in enumerate(zip(emitting, requests, strict=True)):
            tokens: list[int] = []
            for d, proposed in enumerate(request.draft):
                if greedy_rows[first + d] != proposed:
                    break
                tokens.append(proposed)
            # The row after the last accepted draft gives the next token (a sampled request
            # has no drafts: its one row is sampled).
            tokens.append(sampled[j] if j in sampled else greedy_rows[first + len(tokens)])
            emitted[spans[i][0]] = tokens
        return emitted

    def _check_stop_strings(self, request: Request) -> str | None:
        if len(request.output_token_ids) < request.params.min_tokens:
            return None
        text = request.text_stream.text
        found = [i for i in (text.find(s) for s in request.params.stop) if i >= 0]
        if not found:
            return None
        request.text_end = min(found)
        return "stop"

    def _name_blocks(self, request: Request) -> None:
        """Name newly filled blocks for prefix caching (only when a block boundary passed)."""
        if self.kv.has_unnamed_full_blocks(request.request_id, request.num_computed_tokens):
            self.kv.name_full_blocks(
                request.request_id, request.all_token_ids, request.num_computed_tokens
            )

    def _make_runner(self, model, cache, samples_per_seq: int | None = None) -> ModelRunner:
        """The runner for `model` (the target, or the draft model) on this engine's device."""
        c = self.config
        return make_runner(
            model,
            cache,
            self.device,
            attention=c.attention,
            cuda_graphs=c.cuda_graphs,
            block_size=c.block_size,
            max_num_seqs=c.max_num_seqs,
            max_num_batched_tokens=c.max_num_batched_tokens,
            max_len=self.max_model_len + c.speculative_tokens + 1,
            samples_per_seq=samples_per_seq or 1 + c.speculative_tokens,
        )

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its blocks; None when it is unknown or already done."""
        request = self._requests.get(request_id)
        if request is None or request.status is RequestStatus.FINISHED:
            return None
        self._finish(request, "abort", self.clock.now_ms())
        return self._output(request, [])

    def stats(self) -> EngineStats:
        kv = self.pool.stats()
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_blocks_total=kv.total_blocks,
            kv_blocks_used=kv.used_blocks,
            kv_usage=kv.usage,
            prefix_hit_rate=kv.prefix_hit_rate,
            num_preemptions=self.scheduler.num_preemptions,
            num_steps=self._steps,
            prompt_tokens_computed=self._prompt_tokens,
            generated_tokens=self._generated,
            clock_ms=self.clock.now_ms(),
            draft_tokens_proposed=self._spec_proposed,
            draft_tokens_accepted=self._spec_accepted,
        )

    @property
    def weight_format(self) -> str:
        """How the linear layers' weights are stored: "int8", "float8_e4m3fn", or the dtype."""
        if self.config.quantization == "int8":
            return "int8"
        if self.config.quantization == "fp8":
            return str(fp8_dtype(self.device)).replace("torch.", "")
        return str(self.dtype).replace("torch.", "")

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_work or (
            self.chain is not None and self.chain.inflight is not None
        )

    # --- helpers ---------------------------------------------------------------------------

    def _finish(self, request: Request, reason: str, now: float) -> None:
        self.num_finished += 1
        self.scheduler.remove(request)
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.finished_ms = now
        del self._requests[request.request_id]

    def _output(self, request: Request, new: list[int]) -> RequestOutput:
        finished = request.status is RequestStatus.FINISHED
        delta = request.params.output_kind is OutputKind.DELTA
        ids = new if delta else request.output_token_ids.copy()
        if self.tokenizer is None:
            text = ""
        elif finished or request.text_stream is None:
            # whole: a character still incomplete in the stream is decoded too
            text = self.tokenizer.decode(request.output_token_ids)
        else:
            text = request.text_stream.text
        if request.text_end is not None:
            text = text[: request.text_end]
        if delta:
            text, request.text_sent = text[request.text_sent :], len(text)
        params = request.params
        logprobs = prompt_logprobs = None
        if params.logprobs is not None:
            logprobs = (
                request.logprobs[len(request.logprobs) - len(new) :]
                if delta
                else list(request.logprobs)
            )
        if params.prompt_logprobs is not None and (
            not delta or len(request.output_token_ids) == len(new)  # a delta's first output
        ):
            prompt_logprobs = list(request.prompt_logprobs)
        ttft = (
            None if request.first_token_ms is None else request.first_token_ms - request.arrival_ms
        )
        latency = None if request.finished_ms is None else request.finished_ms - request.arrival_ms
        return RequestOutput(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            new_token_ids=new,
            token_ids=ids,
            finished=finished,
            finish_reason=request.finish_reason,
            text=text,
            num_cached_tokens=request.num_cached_tokens,
            ttft_ms=ttft,
            latency_ms=latency,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError(
                    "this model folder has no tokenizer.json, so prompts must be lists of "
                    f"token ids, not text (got {prompt[:40]!r})"
                )
            token_ids = self.tokenizer.encode(prompt)
        else:
            token_ids = [int(t) for t in prompt]
        if not token_ids:
            raise ValueError("empty prompt: give at least one token")
        vocab = self.model_config.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(token_ids)} tokens leaves no room to generate: the model "
                f"takes at most {self.max_model_len}; shorten it"
            )
        return token_ids


def _emits(request: Request, count: int) -> bool:
    """Whether a scheduled chunk of `count` tokens reaches the end of what the request has
    (then its last row samples the next token)."""
    return request.num_computed_tokens + count == request.num_tokens + len(request.draft)


def _default_dtype(config: ModelConfig, device: torch.device) -> torch.dtype:
    name = config.torch_dtype.replace("torch.", "")
    dtype = getattr(torch, name, torch.float32)
    if not isinstance(dtype, torch.dtype) or device.type == "cpu":
        return torch.float32  # CPU matmuls in half precision are slow and lossy
    return dtype
