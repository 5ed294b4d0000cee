"""KPT_SIM_VISIBLE_DEVICES parsed: which daemon devices this process sees, numbered from 0.

Like CUDA_VISIBLE_DEVICES. Discovery applies it to what it finds; the client
(``kpt.adapters.sim._visible.VisibleClient``) translates indices at the SimClient boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

ENV = "KPT_SIM_VISIBLE_DEVICES"  # read by Settings, like every KPT_SIM_* variable


def parse_visible(value: str | None) -> list[int] | None:
    """The daemon indices a KPT_SIM_VISIBLE_DEVICES value lists (in order); None: unset."""
    if value is None or not value.strip():
        return None
    try:
        indices = [int(part) for part in value.split(",")]
    except ValueError:
        indices = []
    if not indices or any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(
            f"{ENV}={value!r}: give distinct daemon device indices separated by commas, "
            "e.g. 1 or 0,2"
        )
    return indices


def check_visible(visible: Sequence[int], daemon_count: int) -> None:
    missing = [i for i in visible if i >= daemon_count]
    if missing:
        listed = ",".join(map(str, visible))
        raise ValueError(
            f"{ENV}={listed!r} names daemon device(s) {missing}, but the daemon has "
            f"{daemon_count} device(s) (0..{daemon_count - 1}); list existing indices"
        )


def visible_count(total: int, visible: Sequence[int] | None) -> int:
    """How many devices this process sees out of ``total`` daemon devices."""
    if visible is None:
        return total
    check_visible(visible, total)
    return len(visible)
