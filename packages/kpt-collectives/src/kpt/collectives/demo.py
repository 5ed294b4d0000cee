"""The demo step: 2-process data-parallel training on h100-sxm + mi300x with split_batch.

``kpt.collectives.demo.main(argv)`` runs it (one simulator daemon, one process per chip),
prints each chip's simulated step alone and in the pair, and two efficiencies, each the pair's
throughput over a sum of single-chip throughputs:

- at the same per-chip batch (weak scaling, the usual data-parallel measure): each chip alone on
  the share of the batch it gets in the pair. What is lost is what distribution costs: the
  imbalance of the split, exposed communication, the gradient weighting.
- on the global batch (strong scaling): each chip alone on the whole batch. It also loses the
  work every step pays once per chip whatever the batch (optimizer step, zero_grad, launch
  overheads), which the pair pays on both chips for each global batch.

Returns the figures.

    python -m kpt.collectives.demo [--batch 8192] [--width 4096] [--depth 4] [--steps 3]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kpt.collectives._hetero import HeteroJob, RankReport, run_job


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m kpt.collectives.demo",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument(
        "--batch",
        type=int,
        default=HeteroJob.global_batch,
        help="global batch (samples per step, split across the chips)",
    )
    parser.add_argument("--width", type=int, default=HeteroJob.width, help="MLP layer width")
    parser.add_argument("--depth", type=int, default=HeteroJob.depth, help="MLP layers")
    parser.add_argument("--steps", type=int, default=HeteroJob.steps, help="timed steps")
    parser.add_argument(
        "--numerics",
        action="store_true",
        help="compute values too (slow on a CPU host; default timing only)",
    )
    args = parser.parse_args(argv)
    job = HeteroJob(width=args.width, depth=args.depth, global_batch=args.batch,
                    steps=args.steps, numerics=args.numerics)  # fmt: skip
    reports = run_job(job)
    result = summarize(job, reports)
    print(format_summary(job, result))
    return result


def summarize(job: HeteroJob, reports: list[RankReport]) -> dict:
    """Throughputs in samples per simulated second; efficiency = pair / sum of singles, the
    singles on the global batch (`efficiency`) or on each chip's share (`efficiency_same_batch`,
    None when the shares were not timed alone)."""
    alone = [job.global_batch / r.alone_step_s for r in reports]
    shares = [r.batch / r.alone_share_step_s if r.alone_share_step_s else None for r in reports]
    pair_step = max(r.pair_step_s for r in reports)
    pair = job.global_batch / pair_step
    return {
        "chips": [
            {
                "chip": r.chip,
                "alone_step_ms": r.alone_step_s * 1e3,
                "alone_samples_per_s": a,
                "batch": r.batch,
                "pair_step_ms": r.pair_step_s * 1e3,
                "alone_share_step_ms": r.alone_share_step_s * 1e3,
            }
            for r, a in zip(reports, alone)
        ],
        "pair_step_ms": pair_step * 1e3,
        "pair_samples_per_s": pair,
        "efficiency": pair / sum(alone),
        "efficiency_same_batch": None if None in shares else pair / sum(shares),
        "all_reduces": [a for r in reports for a in r.all_reduces],
    }


def format_summary(job: HeteroJob, result: dict) -> str:
    lines = [
        f"data parallel on {' + '.join(job.chips)}: MLP {job.depth}x{job.width}, global batch "
        f"{job.global_batch}, simulated time ({'values' if job.numerics else 'timing only'})",
        f"{'chip':<12}{'alone: step ms':>16}{'samples/s':>12}{'pair: batch':>13}{'step ms':>10}"
        f"{'alone on that batch: step ms':>30}",
    ]
    for c in result["chips"]:
        lines.append(f"{c['chip']:<12}{c['alone_step_ms']:>16.2f}{c['alone_samples_per_s']:>12.0f}"
                     f"{c['batch']:>13}{c['pair_step_ms']:>10.2f}"
                     f"{c['alone_share_step_ms']:>30.2f}")  # fmt: skip
    lines.append(f"pair: {result['pair_samples_per_s']:.0f} samples/s; efficiency (pair / sum "
                 f"of singles): {result['efficiency']:.3f} on the global batch")  # fmt: skip
    if result["efficiency_same_batch"] is not None:
        lines.append(f"efficiency at the same per-chip batch (weak scaling): "
                     f"{result['efficiency_same_batch']:.3f}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
