"""Tabular input: a CSV column split by a group column, and DataFrame-like mappings."""

import json

import numpy as np
import pytest

import kpt.abtest as ab
from kpt.abtest._cli import main


@pytest.fixture
def table():
    rng = np.random.default_rng(6)
    groups = rng.choice(["control", "treatment"], 400)
    values = np.where(groups == "control", rng.normal(10, 1, 400), rng.normal(9.5, 1, 400))
    return {"variant": groups.tolist(), "latency_ms": values.tolist(), "host": ["h1"] * 400}


def _expected(table):
    v, g = np.asarray(table["latency_ms"]), np.asarray(table["variant"])
    return ab.compare(v[g == "control"], v[g == "treatment"])


def test_mapping_splits_by_group_first_seen_is_baseline(table):
    c = ab.compare_groups(table, "latency_ms", "variant")
    first = table["variant"][0]
    (name_a, _), (name_b, _) = ab.split_groups(table, "latency_ms", "variant")
    assert name_a == first and {name_a, name_b} == {"control", "treatment"}
    fixed = ab.compare_groups(table, "latency_ms", "variant", baseline="control")
    assert fixed == _expected(table) and fixed.decision == "b_better"
    assert c.effect == pytest.approx(fixed.effect * (1 if first == "control" else -1))
    same = ab.compare_groups(table, "latency_ms", "variant", variant="treatment")
    assert same == fixed


def test_dataframe_like_objects_work():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"g": ["a", "b"] * 50, "x": np.arange(100.0)})
    c = ab.compare_groups(df, "x", "g", method="mann_whitney")
    assert (c.n_a, c.n_b) == (50, 50) and c.effect == pytest.approx(1.0)


def test_table_errors_name_what_is_wrong(table):
    with pytest.raises(ValueError, match=r"column 'latency' is not in the table; its columns: "):
        ab.compare_groups(table, "latency", "variant")
    three = dict(table, variant=["x", "y", "z", *table["variant"][3:]])
    with pytest.raises(ValueError, match=r"holds 5 groups .* pass baseline= and variant="):
        ab.compare_groups(three, "latency_ms", "variant")
    holes = dict(table, latency_ms=[float("nan"), *table["latency_ms"][1:]])
    with pytest.raises(ValueError, match=r"1 missing or non-finite value\(s\) in group"):
        ab.compare_groups(holes, "latency_ms", "variant")


def _csv(path, table):
    rows = ["variant,latency_ms,host"]
    rows += [f"{g},{v!r},{h}" for g, v, h in zip(*table.values(), strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cli_one_csv_two_variants(table, tmp_path, capsys):
    path = _csv(tmp_path / "runs.csv", table)
    argv = ["compare", str(path), "--column", "latency_ms", "--group", "variant",
            "--baseline-group", "control", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effect"] == pytest.approx(_expected(table).effect)
    assert main([*argv[:-1], "--method", "mann_whitney"]) == 0
    text = capsys.readouterr().out
    assert "a = variant control, b = variant treatment" in text and "Moses" in text


def test_cli_column_from_two_csv_files_and_errors(table, tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("ms,other\n1,x\n2,x\n3,x\n")
    b.write_text("ms,other\n2,x\n3,x\n4,x\n")
    assert main(["compare", str(a), str(b), "--column", "ms", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["effect"] == pytest.approx(1.0)
    assert main(["compare", str(a), "--column", "ms"]) == 2
    assert "needs --group" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--column", "other"]) == 2
    assert "column 'other' holds 'x', not a number" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--column", "ms", "--group", "other"]) == 2
    assert "give one file" in capsys.readouterr().err
