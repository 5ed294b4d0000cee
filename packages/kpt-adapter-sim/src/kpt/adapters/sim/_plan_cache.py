"""The client's memo tables, owned by the Runtime (``Runtime.plans``).

Everything here is a pure function of op schemas and argument structure, worked out once and
looked up on every op: how an op is handled, its plans, what its schema says, its out= overload,
the fused kernels' plans and choices, and the ``torch.device`` per index. Kept in one object the
Runtime owns, so a fresh Runtime (``shutdown()``, a test) starts from empty tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PlanCache:
    handlers: dict[Any, Any] = field(default_factory=dict)  # op -> its handler (_dispatch)
    plans: dict[Any, Any] = field(default_factory=dict)  # (op, signature) -> Plan or reason
    fused_plans: dict[Any, Any] = field(default_factory=dict)  # the same, costed by _fused
    op_infos: dict[Any, Any] = field(default_factory=dict)  # op -> OpInfo (_plan)
    out_variants: dict[Any, Any] = field(default_factory=dict)  # op -> (name, keyword) or None
    attention_choices: dict[tuple, int] = field(default_factory=dict)  # _fused_attention
    lstm_workspaces: dict[tuple, int] = field(default_factory=dict)  # _fused_rnn: shapes -> bytes
    devices: dict[int, Any] = field(default_factory=dict)  # index -> torch.device (SimTensor)


def remember(table: dict, key: Any, value: Any, limit: int) -> None:
    """Keep ``value`` under ``key``; a table holding ``limit`` entries starts over first (a
    program with that many distinct signatures is not repeating itself)."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
