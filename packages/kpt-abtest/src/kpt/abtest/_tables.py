"""Tabular input: one column of values split into two variants by a group column.

Works on CSV files and on anything DataFrame-like that maps a column name to a sequence
(pandas or polars DataFrames, a dict of lists or arrays), without importing pandas.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kpt.abtest._compare import compare
from kpt.abtest._result import Comparison


def _columns_of(data: Any) -> list[str]:
    columns = getattr(data, "columns", None)
    if columns is None and isinstance(data, Mapping):
        columns = data.keys()
    return [str(c) for c in columns] if columns is not None else []


def _column(data: Any, name: str) -> np.ndarray:
    try:
        values = data[name]
    except (KeyError, IndexError, TypeError):
        found = ", ".join(_columns_of(data)) or "none found"
        raise ValueError(f"column {name!r} is not in the table; its columns: {found}") from None
    to_numpy = getattr(values, "to_numpy", None)  # pandas / polars Series
    return np.asarray(to_numpy() if callable(to_numpy) else values)


def _numbers(values: np.ndarray, column: str, where: str) -> np.ndarray:
    try:
        numbers = values.astype(np.float64)
    except (TypeError, ValueError):
        bad = next(v for v in values if not _is_number(v))
        raise ValueError(f"column {column!r} holds {bad!r}{where}, not a number") from None
    missing = int(np.count_nonzero(~np.isfinite(numbers)))
    if missing:
        raise ValueError(
            f"column {column!r} holds {missing} missing or non-finite value(s){where}; "
            "drop those rows first (e.g. df.dropna(subset=[...]))"
        )
    return numbers


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def split_groups(
    data: Any, column: str, group: str, *, baseline: Any = None, variant: Any = None
) -> tuple[tuple[str, np.ndarray], tuple[str, np.ndarray]]:
    """((baseline name, values), (variant name, values)) from one table.

    The group column must hold exactly two distinct values unless baseline and variant name
    the two to compare; without baseline= the group seen first is the baseline (arm a).
    """
    labels = _column(data, group)
    values = _column(data, column)
    if labels.shape[0] != values.shape[0]:
        raise ValueError(f"columns {column!r} and {group!r} differ in length: "
                         f"{values.shape[0]} vs {labels.shape[0]}")  # fmt: skip
    keys = [str(v) for v in labels.tolist()]
    seen = list(dict.fromkeys(keys))
    chosen = [str(x) for x in (baseline, variant) if x is not None]
    for name in chosen:
        if name not in seen:
            raise ValueError(f"group {name!r} is not in column {group!r}; groups: {seen}")
    if len(chosen) < 2:
        rest = [g for g in seen if g not in chosen]
        if len(seen) != 2:
            raise ValueError(
                f"column {group!r} holds {len(seen)} groups {seen[:10]}; compare needs two: "
                "pass baseline= and variant= (CLI: --baseline-group / --variant-group)"
            )
        chosen = [*chosen, *rest] if baseline is not None or variant is None else [*rest, *chosen]
    keys_arr = np.asarray(keys, dtype=object)
    out = []
    for name in chosen:
        picked = values[keys_arr == name]
        out.append((name, _numbers(picked, column, f" in group {name!r}")))
    return out[0], out[1]


def compare_groups(
    data: Any,
    column: str,
    group: str,
    metric: Any = "mean",
    *,
    baseline: Any = None,
    variant: Any = None,
    **options: Any,
) -> Comparison:
    """compare() on a table: ``column``'s values of the variant group against the baseline.

    ``data``: a pandas/polars DataFrame or any mapping of column name -> sequence. Other
    keyword arguments go to compare() (alpha, method, higher_is_better, ...).
    """
    (_, a), (_, b) = split_groups(data, column, group, baseline=baseline, variant=variant)
    return compare(a, b, metric, **options)


def read_csv_table(path: str | Path) -> dict[str, list[str]]:
    """A CSV file with a header row as {column: [cell text, ...]}."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise ValueError(f"CSV file {str(path)!r} has no header row naming its columns")
            table: dict[str, list[str]] = {name: [] for name in reader.fieldnames}
            for line_no, row in enumerate(reader, start=2):
                if None in row:
                    raise ValueError(f"{path}:{line_no}: more cells than header columns")
                for name in reader.fieldnames:
                    table[name].append("" if row[name] is None else row[name].strip())
    except FileNotFoundError:
        raise ValueError(f"CSV file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"CSV file {str(path)!r} is not text: {error}") from None
    return table


def csv_column(table: Mapping[str, list[str]], column: str, where: str = "") -> np.ndarray:
    """One CSV column as numbers; an empty cell or a word is reported with its row."""
    values = _column(table, column)
    for row, cell in enumerate(values.tolist(), start=2):
        if not _is_number(cell):
            raise ValueError(f"{where}row {row}: column {column!r} holds {cell!r}, not a number")
    return _numbers(values, column, f" in {where.rstrip(': ')}" if where else "")
