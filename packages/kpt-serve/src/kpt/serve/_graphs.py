"""Fixed buffers and CUDA graphs for steps padded to buckets of (tokens, sequences).

A captured graph replays the same kernels on the same addresses, so every input lives in one
persistent device buffer at offsets fixed by the bucket, and each step is padded to its
bucket: pad tokens write their KV to a scratch slot nobody reads, pad query blocks (sequence
-1) do nothing, pad logits rows are computed and ignored. The paged attention kernel's grid
depends only on the bucket and its loop bounds are read on the device, so one graph serves
every batch that fits. Graphs are captured on first use of a bucket (the engine's warm-up
or its first steps) and shared memory through one pool.

With capture=False the same padded buffers are used eagerly: that is how the CPU tests check
the padding logic of this path without a GPU.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kpt.serve._attention import AttentionMetadata, PagedMetadata
from kpt.serve._batch import QUERY_BLOCK, StepBatch, host_tensor

# Shapes are padded up to the next of these; finer than powers of two where sizes are large
# so that padding wastes at most half (tokens) or a quarter (sequences) of a step.
_TOKEN_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
_SEQ_BUCKETS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]
MAX_GRAPHS = 160  # beyond this many captured buckets, further shapes run eagerly


class HostStaging:
    """Copies a step's host arrays to the device: on CUDA in one pinned, asynchronous copy."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._host: torch.Tensor | None = None
        self._dev: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def upload(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        if not self._cuda:
            return [host_tensor(a).to(self.device) for a in arrays]
        total = sum(a.size for a in arrays)
        if self._host is None or self._host.numel() < total:
            size = 1 << max(total, 1024).bit_length()
            self._host = torch.empty(size, dtype=torch.int64, pin_memory=True)
            self._dev = torch.empty(size, dtype=torch.int64, device=self.device)
            self._copied = torch.cuda.Event()
        else:
            self._copied.synchronize()  # the previous copy has left the pinned buffer
        host = self._host.numpy()
        offset = 0
        for a in arrays:
            host[offset : offset + a.size] = a.ravel()
            offset += a.size
        self._dev[:total].copy_(self._host[:total], non_blocking=True)
        self._copied.record()
        views, offset = [], 0
        for a in arrays:
            views.append(self._dev[offset : offset + a.size].view(a.shape))
            offset += a.size
        return views


@dataclass
class _Layout:
    """Where each input of a bucket (tokens, seqs) sits in the persistent buffer."""

    tokens: int
    seqs: int
    rows: int
    qblocks: int
    width: int

    def sizes(self) -> list[int]:
        t, s = self.tokens, self.seqs
        return [t, t, t, self.rows, s + 1, s, self.qblocks, self.qblocks, s * self.width]

    @property
    def total(self) -> int:
        return sum(self.sizes())


@dataclass
class _Entry:
    layout: _Layout
    views: list[torch.Tensor]
    graph: torch.cuda.CUDAGraph | None
    logits: torch.Tensor | None
    meta: AttentionMetadata


class BucketedGraphs:
    """Runs padded steps through graphs captured per bucket (or eagerly, capture=False)."""

    def __init__(
        self,
        forward: Callable[..., torch.Tensor],
        device: torch.device,
        *,
        block_size: int,
        scratch_slot: int,
        max_tokens: int,
        max_seqs: int,
        block_width: int,
        samples_per_seq: int = 1,
        capture: bool = True,
    ) -> None:
        self.forward = forward
        self.device = device
        self.block_size = block_size
        self.scratch_slot = scratch_slot
        self.block_width = block_width
        self.samples_per_seq = samples_per_seq
        self.capture = capture and device.type == "cuda"
        self.token_buckets = _sizes(_TOKEN_BUCKETS, max_tokens)
        self.seq_buckets = _sizes(_SEQ_BUCKETS, max_seqs)
        self._entries: dict[tuple[int, int], _Entry] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.capture else None
        largest = self._layout(self.token_buckets[-1], self.seq_buckets[-1]).total
        pinned = device.type == "cuda"
        self._host = torch.zeros(largest, dtype=torch.int64, pin_memory=pinned)
        self._dev = torch.zeros(largest, dtype=torch.int64, device=device)
        self._copied = torch.cuda.Event() if pinned else None  # the upload left the host
        self._upload = torch.cuda.Stream(device) if pinned else None
        self._staged = torch.zeros_like(self._dev) if pinned else None
        self._staged_read = torch.cuda.Event() if pinned else None
        self.capture_seconds = 0.0
        self.replays = 0
        self._last: _Entry | None = None

    @property
    def num_graphs(self) -> int:
        return len(self._entries)

    def run(self, batch: StepBatch, input_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """Logits of the batch's sample rows, or None when no bucket holds the batch."""
        key = self._bucket(batch)
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= MAX_GRAPHS:
                return None
            entry = self._entries[key] = self._make(*key)
        self._fill(entry.layout, batch)
        if input_ids is not None:  # ids come first in the buffer
            self._dev[: len(input_ids)].copy_(input_ids)
        self._last = entry
        self.replays += 1
        if entry.graph is not None:
            entry.graph.replay()
            logits = entry.logits
        else:
            logits = self._call(entry)
        return logits[: len(batch.sample_rows)]

    def time_last_replay(self, repeats: int = 20) -> float:
        """Mean ms of replaying the last step's graph on its own (the bare forward, for the
        benchmark). Replaying recomputes the same tokens into the same slots, so it changes
        nothing; call it right after a step."""
        entry = self._last
        if entry is None or entry.graph is None:
            raise RuntimeError("no captured graph has run yet: time after a CUDA-graph step")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        entry.graph.replay()
        start.record()
        for _ in range(repeats):
            entry.graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeats

    # --- internals ---------------------------------------------------------------------

    def _bucket(self, batch: StepBatch) -> tuple[int, int] | None:
        tokens, seqs = batch.num_tokens, batch.num_seqs
        if (
            tokens > self.token_buckets[-1]
            or seqs > self.seq_buckets[-1]
            or batch.block_tables.shape[1] > self.block_width
            or len(batch.sample_rows) > seqs * self.samples_per_seq
        ):
            return None
        s = self.seq_buckets[bisect.bisect_left(self.seq_buckets, seqs)]
        i = bisect.bisect_left(self.token_buckets, max(tokens, s))
        if i == len(self.token_buckets):
            return None
        return self.token_buckets[i], s

    def _layout(self, tokens: int, seqs: int) -> _Layout:
        return _Layout(
            tokens=tokens,
            seqs=seqs,
            rows=seqs * self.samples_per_seq,
            qblocks=-(-tokens // QUERY_BLOCK) + seqs,
            width=self.block_width,
        )

    def _fill(self, layout: _Layout, batch: StepBatch | None) -> None:
        """Write the (padded) batch into the host buffer and copy it to the device."""
        if self._copied is not None:
            self._copied.synchronize()  # the previous step's copy has left the pinned buffer
        host = self._host.numpy()
        t, s = batch.num_tokens if batch else 0, batch.num_seqs if batch else 0
        parts = [
            (batch.input_ids if batch else None, t, 0),
            (batch.positions if batch else None, t, 0),
            (batch.slot_mapping if batch else None, t, self.scratch_slot),
            (batch.sample_rows if batch else None, len(batch.sample_rows) if batch else 0, 0),
            (batch.query_start if batch else None, s + 1 if batch else 0, t),
            (batch.seq_lens if batch else None, s, 0),
            (batch.qblock_seq if batch else None, len(batch.qblock_seq) if batch else 0, -1),
            (batch.qblock_index if batch else None, len(batch.qblock_index) if batch else 0, 0),
        ]
        offset = 0
        for (values, count, pad), size in zip(parts, layout.sizes()[:-1], strict=True):
            if count:
                host[offset : offset + count] = values
            host[offset + count : offset + size] = pad
            offset += size
        tables = host[offset : offset + layout.seqs * layout.width].reshape(
            layout.seqs, layout.width
        )
        tables[:] = 0
        if batch is not None:
            tables[:s, : batch.block_tables.shape[1]] = batch.block_tables
        total = layout.total
        if self._upload is None:
            self._dev[:total].copy_(self._host[:total])
            return
        # The upload runs on a side stream into a staging buffer, early (while the previous
        # step computes), and the step's stream copies it over device to device: a
        # host-to-device copy queued between two replays costs the device about 10 us more
        # (profile_decode_gaps.py's hand-off test).
        self._upload.wait_event(self._staged_read)  # the last step has read the staging buffer
        with torch.cuda.stream(self._upload):
            self._staged[:total].copy_(self._host[:total], non_blocking=True)
            self._copied.record()
        torch.cuda.current_stream(self.device).wait_event(self._copied)
        self._dev[:total].copy_(self._staged[:total], non_blocking=True)
        self._staged_read.record()

    def _make(self, tokens: int, seqs: int) -> _Entry:
        layout = self._layout(tokens, seqs)
        views, offset = [], 0
        for size in layout.sizes():
            views.append(self._dev[offset : offset + size])
            offset += size
        views[-1] = views[-1].view(seqs, layout.width)
        _, _, slots, _, qstart, seq_lens, qb_seq, qb_index, tables = views
        meta = AttentionMetadata(
            slot_mapping=slots,
            num_tokens=tokens,
            paged=PagedMetadata(qstart, seq_lens, tables, qb_seq, qb_index),
        )
        entry = _Entry(layout, views, None, None, meta)
        if not self.capture:
            return entry
        start = time.perf_counter()
        self._fill(layout, None)  # an all-padding batch: nothing is attended or kept
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up: compiles kernels, sets up cuBLAS, outside capture
            self._call(entry)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            entry.logits = self._call(entry)
        entry.graph = graph
        torch.cuda.synchronize(self.device)
        self.capture_seconds += time.perf_counter() - start
        return entry

    def _call(self, entry: _Entry) -> torch.Tensor:
        ids, positions, _, rows = entry.views[:4]
        return self.forward(ids, positions, entry.meta, rows)


def _sizes(base: list[int], most: int) -> list[int]:
    """Bucket sizes up to the first that holds `most` (extended by quarters past the list)."""
    sizes = []
    for b in base:
        sizes.append(b)
        if b >= most:
            return sizes
    size, step = base[-1], max(base[-1] // 4, 1)
    while size < most:
        size += step
        sizes.append(size)
    return sizes
