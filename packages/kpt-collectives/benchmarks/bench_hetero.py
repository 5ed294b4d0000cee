"""Heterogeneous data parallelism on simulated chips: h100-sxm + mi300x with split_batch.

The demo's job (kpt.collectives.demo): one daemon, one process per chip. Each chip first trains
alone on the global batch (its samples per simulated second: the baseline, same run); then both
train with DDP on split_batch shares. Efficiency = the pair's throughput / the sum of the
single-chip throughputs. Timing only by default (the daemon computes no values).

    python benchmarks/bench_hetero.py [--batch 8192] [--width 4096] [--depth 4] [--steps 3]
"""

from __future__ import annotations

import sys

from kpt.collectives import demo

if __name__ == "__main__":
    demo.main(sys.argv[1:])
