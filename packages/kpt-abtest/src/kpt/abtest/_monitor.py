"""``kpt-abtest monitor ENDPOINT``: a live terminal view of a distributed evaluation."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

_CLEAR = "\x1b[H\x1b[2J"  # cursor home + clear screen: redraw in place, no curses needed


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render_status(status: Mapping[str, Any]) -> str:
    """The monitor's text for one status snapshot (see Aggregator.snapshot)."""
    level = f"{100 * (1 - status.get('alpha', 0.05)):g}%"
    better = "higher" if status.get("higher_is_better") else "lower"
    lines = [
        f"kpt-abtest monitor   decision: {status.get('decision', 'waiting')}   "
        f"summaries: {status.get('summaries_received', 0)} "
        f"({_num(status.get('receive_rate_per_s'), 3)}/s)   "
        f"up {_num(status.get('uptime_s'), 3)} s   ({better} is better)",
        "",
        f"{'arm':<14}{'n':>10}{'mean':>12}{'sd':>12}{'p50':>12}{'p95':>12}{'p99':>12}",
    ]
    for arm, a in status.get("arms", {}).items():
        mark = " *" if arm == status.get("baseline") else ""
        lines.append(
            f"{(arm + mark)[:14]:<14}{a['n']:>10}{_num(a['mean']):>12}{_num(a['sd']):>12}"
            f"{_num(a['p50']):>12}{_num(a['p95']):>12}{_num(a['p99']):>12}"
        )
    if not status.get("arms"):
        lines.append("(no summaries yet)")
    else:
        lines.append(quantile_note(status["arms"]))
    comparisons = status.get("comparisons", {})
    if comparisons:
        lines += ["", f"vs baseline {status.get('baseline')} (* above); anytime-valid {level} CI:"]
        for arm, c in comparisons.items():
            low, high = c.get("ci") or (None, None)
            relative = c.get("relative")
            rel = "-" if relative is None else f"{100 * relative:+.2f}%"
            lines.append(
                f"  {arm:<12} difference {_num(c.get('effect')):>10} ({rel})  "
                f"CI [{_num(low)}, {_num(high)}]  -> {c.get('decision')}"
            )
    workers = status.get("workers", {})
    if workers:
        lines += ["", _workers_line(workers)]
        lines += _worker_warnings(workers)
    replayed, refused = status.get("summaries_replayed", 0), status.get("summaries_refused", 0)
    if replayed or refused:
        lines.append(
            f"ignored: {replayed} replayed summaries (already merged), {refused} refused "
            "messages (invalid, or naming a worker from another connection)"
        )
    return "\n".join(lines)


def quantile_note(arms: Mapping[str, Any]) -> str:
    """Says whether the arms' p50/p95/p99 are exact or KLL approximations, with the bound."""
    bound = max((a.get("quantile_rank_error") or 0.0) for a in arms.values())
    if bound == 0.0:
        return "p50/p95/p99: exact (every value kept so far)"
    return (
        f"p50/p95/p99: approximate, from KLL sketches: each is the true quantile at a level "
        f"within +-{100 * bound:.3g} points (rank error bound, 99% confidence)"
    )


def _workers_line(workers: Mapping[str, Any]) -> str:
    done = sum(1 for w in workers.values() if w.get("done"))
    failed = [name for name, w in workers.items() if w.get("error")]
    lost = [
        f"{name} (silent {_num(w.get('silent_s'), 3)} s)"
        for name, w in workers.items()
        if w.get("state") == "lost"
    ]
    text = f"workers: {len(workers)} seen, {done} done"
    if failed:
        text += f", failed: {', '.join(failed)}"
    if lost:
        text += f", LOST (connection gone before done): {', '.join(lost)}"
    return text


def _worker_warnings(workers: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, w in workers.items():
        missing, replayed, refused = w.get("missing", 0), w.get("replayed", 0), w.get("refused", 0)
        if missing or replayed or refused:
            text = f"  {name}: {missing} summaries missing, {replayed} replays ignored"
            text += f", {refused} refused"
            if w.get("last_refusal"):
                text += f" (last: {w['last_refusal'][:120]})"
            lines.append(text)
    return lines


def _all_done(status: Mapping[str, Any]) -> bool:
    workers = status.get("workers", {})
    return bool(workers) and all(w.get("done") for w in workers.values())


def ended_message(endpoint: str, last: Mapping[str, Any]) -> str:
    """What the monitor says when an aggregator it was watching stops answering."""
    workers = last.get("workers", {})
    done = sum(1 for w in workers.values() if w.get("done"))
    if _all_done(last):
        return (
            f"the evaluation at {endpoint} has finished: all {len(workers)} workers reported "
            f"done and the aggregator closed; final decision: {last.get('decision')} (above)"
        )
    return (
        f"the aggregator at {endpoint} stopped answering with {done} of {len(workers)} workers "
        "done: the evaluation was stopped or its process exited; last status above"
    )


def fetch_status(endpoint: str, *, timeout: float = 5.0) -> dict[str, Any]:
    from kpt.abtest._distributed import _wire

    wire = _wire()
    with wire.Client(endpoint, timeout=timeout, retries=0) as client:
        return dict(client.call("status", {}, idempotent=True).header)


def monitor(
    endpoint: str,
    *,
    interval: float = 1.0,
    once: bool = False,
    as_json: bool = False,
    out: TextIO | None = None,
    max_updates: int | None = None,
) -> int:
    """Redraw the status every ``interval`` s until Ctrl-C (or once). Returns an exit code."""
    from kpt.abtest._distributed import _wire

    wire = _wire()
    out = out or sys.stdout
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
    updates = 0
    timeout = max(2.0, 3 * interval)
    last: dict[str, Any] | None = None
    with wire.Client(endpoint, timeout=timeout, retries=0) as client:
        while True:
            try:
                status = dict(client.call("status", {}).header)
            except wire.WireError:
                if last is None:
                    raise RuntimeError(
                        f"no aggregator answers at {endpoint} within {timeout:g} s. Is the "
                        "evaluation running, and is this the endpoint it printed?"
                    ) from None
                # It answered before: the evaluation ended and its aggregator closed (the wire
                # client cannot tell a closed server from a slow one, so say what happened).
                out.write(ended_message(endpoint, last) + "\n")
                out.flush()
                return 0 if _all_done(last) else 1
            last = status
            if as_json:
                out.write(json.dumps(status) + "\n")
            else:
                out.write(("" if once else _CLEAR) + render_status(status) + "\n")
            out.flush()
            updates += 1
            if once or (max_updates is not None and updates >= max_updates):
                return 0
            time.sleep(interval)
