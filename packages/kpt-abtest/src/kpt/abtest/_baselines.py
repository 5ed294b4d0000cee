"""Named benchmark baselines on disk, as criterion keeps them (--save-baseline / --baseline).

A baseline is one JSON file ``<folder>/<name>.json`` holding every cell's raw step times, so a
later run is compared sample against sample (a two-sample test), not against a single mean.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BASELINE_FORMAT = "kpt-abtest-baseline/1"
DEFAULT_FOLDER = Path(".kpt-abtest") / "baselines"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BaselineStore:
    """Save and load named baselines in one folder (default ``.kpt-abtest/baselines``)."""

    def __init__(self, folder: str | Path = DEFAULT_FOLDER) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        """Where baseline `name` lives; a name that is not a safe file name is refused."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"baseline name {name!r} must be 1-100 letters, digits, '.', '_' or '-' "
                "(it becomes a file name), e.g. 'main' or 'v0.3.1'"
            )
        return self.folder / f"{name}.json"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []

    def save(self, name: str, cells: Mapping[str, Mapping[str, Any]], **meta: Any) -> Path:
        """Write (or replace) baseline ``name``; cells map a cell key to {"samples", "clock"}."""
        path = self.path(name)
        payload = {
            "format": BASELINE_FORMAT,
            "name": name,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "meta": dict(meta),
            "cells": {
                key: {"samples": [float(v) for v in cell["samples"]],
                      "clock": cell.get("clock", "measured")}
                for key, cell in cells.items()
            },
        }  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".json.{os.getpid()}.tmp")
        partial.write_text(json.dumps(payload, indent=1))
        partial.replace(path)  # atomic: a reader never sees half a baseline
        return path

    def load(self, name: str) -> dict[str, Any]:
        """The saved baseline ``name``; a missing one names the baselines that exist."""
        path = self.path(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none yet"
            raise ValueError(
                f"baseline {name!r} not found in {str(self.folder)!r} (saved: {known}); "
                "create it with --save-baseline NAME"
            ) from None
        except json.JSONDecodeError as error:
            raise ValueError(f"baseline file {str(path)!r} is not valid JSON: {error}") from None
        if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
            raise ValueError(
                f"baseline file {str(path)!r} is not a {BASELINE_FORMAT} file "
                f"(format {data.get('format') if isinstance(data, dict) else None!r})"
            )
        return data
