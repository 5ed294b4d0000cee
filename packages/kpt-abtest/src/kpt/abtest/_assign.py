"""Deterministic, salted assignment of unit ids (users, requests, prompts) to weighted arms.

Two layouts, both a pure function of (salt, unit id, arms, weights), so any number of routers
agree without sharing state:

- ``"uniform"``: one hash per unit mapped onto the cumulative weight line. Cheapest; when a
  two-arm split is ramped (90/10 -> 50/50) the units already in the growing last arm stay.
- ``"sticky"``: weighted rendezvous hashing (one hash per unit and arm, the arm with the highest
  ``-weight / ln(u)`` wins). Exactly proportional to the weights, and when weights change or an
  arm is added, only the units that must move do: no unit moves between two arms whose
  weights did not change relative to each other.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_LAYOUTS = ("uniform", "sticky")
_SCALE = float(1 << 64)


def _unit_float(salt: str, unit_id: object, arm: str = "") -> float:
    """A uniform number in (0, 1) from blake2b: stable across processes and Python versions."""
    key = f"{salt}\x1f{arm}\x1f{unit_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


@dataclass(frozen=True)
class Assigner:
    """Maps unit ids to arms. ``Assigner({"a": 1, "b": 1}, salt="exp-42").assign("user-7")``."""

    arms: tuple[str, ...]
    weights: tuple[float, ...]
    salt: str = ""
    layout: str = "sticky"

    def __init__(
        self,
        arms: Mapping[str, float] | Sequence[str],
        weights: Sequence[float] | None = None,
        *,
        salt: str = "",
        layout: str = "sticky",
    ) -> None:
        if isinstance(arms, Mapping):
            if weights is not None:
                raise ValueError("give weights either in the arms mapping or as weights=, not both")
            names, weights = tuple(arms), tuple(arms.values())
        else:
            names = tuple(arms)
            weights = tuple(weights) if weights is not None else (1.0,) * len(names)
        _check(names, weights, layout)
        object.__setattr__(self, "arms", tuple(str(n) for n in names))
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        object.__setattr__(self, "salt", str(salt))
        object.__setattr__(self, "layout", layout)

    def assign(self, unit_id: object) -> str:
        """The arm of one unit; the same answer in every process, every time."""
        if self.layout == "uniform":
            u = _unit_float(self.salt, unit_id)
            total = sum(self.weights)
            edge = 0.0
            for name, weight in zip(self.arms, self.weights):
                edge += weight / total
                if u < edge and weight > 0:
                    return name
            return next(n for n, w in zip(reversed(self.arms), reversed(self.weights)) if w > 0)
        best, best_score = self.arms[0], -math.inf
        for name, weight in zip(self.arms, self.weights):
            if weight <= 0:
                continue
            score = -weight / math.log(_unit_float(self.salt, unit_id, name))
            if score > best_score:
                best, best_score = name, score
        return best

    def assign_many(self, unit_ids: Iterable[object]) -> list[str]:
        return [self.assign(u) for u in unit_ids]

    def counts(self, unit_ids: Iterable[object]) -> dict[str, int]:
        """How many of the given units land in each arm (for balance and sample-ratio checks)."""
        result = dict.fromkeys(self.arms, 0)
        for arm in self.assign_many(unit_ids):
            result[arm] += 1
        return result

    def expected_fractions(self) -> dict[str, float]:
        total = sum(self.weights)
        return {name: w / total for name, w in zip(self.arms, self.weights)}


def assign(
    unit_id: object,
    arms: Mapping[str, float] | Sequence[str],
    *,
    salt: str = "",
    layout: str = "sticky",
) -> str:
    """One-shot form of ``Assigner(arms, salt=salt, layout=layout).assign(unit_id)``."""
    return Assigner(arms, salt=salt, layout=layout).assign(unit_id)


def _check(names: Sequence[str], weights: Sequence[float], layout: str) -> None:
    if layout not in _LAYOUTS:
        raise ValueError(f"layout {layout!r} unknown; use one of {', '.join(_LAYOUTS)}")
    if len(names) == 0:
        raise ValueError("no arms given; pass at least one arm name")
    if len(set(map(str, names))) != len(names):
        raise ValueError(f"arm names must be unique, got {list(names)}")
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} weights for {len(names)} arms; give one weight per arm")
    array = np.asarray(weights, dtype=float)
    if not np.all(np.isfinite(array)) or np.any(array < 0) or array.sum() <= 0:
        raise ValueError(
            f"weights must be finite, >= 0 and not all zero, got {list(weights)}; "
            "use e.g. {'control': 0.9, 'treatment': 0.1}"
        )
