import json
import subprocess
import sys

import numpy as np
import pytest

from kpt.abtest._cli import main, read_samples


def _write(path, values):
    path.write_text("\n".join(f"{v:.6f}" for v in values) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(2)
    a = _write(tmp_path / "a.txt", rng.lognormal(0.0, 0.3, 400))
    b = _write(tmp_path / "b.txt", rng.lognormal(-0.3, 0.3, 400))
    return a, b


def test_compare_prints_a_verdict(files, capsys):
    assert main(["compare", str(files[0]), str(files[1]), "--metric", "p95"]) == 0
    out = capsys.readouterr().out
    assert "b is significantly better" in out


def test_compare_json_is_machine_readable(files, capsys):
    assert main(["compare", *map(str, files), "--json", "--metric", "0.9"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["decision"] == "b_better" and data["n_a"] == 400


def test_sample_files_accept_commas_spaces_and_comments(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("# latencies\n1.5, 2.5 3\n\n4;5  # tail\n")
    assert read_samples(path).tolist() == [1.5, 2.5, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    "content, match",
    [
        ("1\n2\nfast\n", r"s\.txt:3: 'fast' is not a number"),
        ("1\nnan\n", "not finite"),
        ("# only a comment\n", "holds no numbers"),
    ],
)
def test_bad_sample_files_are_explained(tmp_path, capsys, content, match):
    bad = tmp_path / "s.txt"
    bad.write_text(content)
    good = _write(tmp_path / "g.txt", [1.0, 2.0, 3.0])
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "kpt-abtest compare: error:" in err
    assert __import__("re").search(match, err)


def test_missing_file_is_explained(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope.txt"), str(tmp_path / "nope.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plan_prints_samples_per_arm(capsys):
    assert main(["plan", "--effect", "0.5", "--sd", "1", "--json"]) == 0
    n = json.loads(capsys.readouterr().out)["n_per_arm"]
    assert 60 <= n <= 70  # normal approximation: 2 * (1.96 + 0.84)^2 / 0.25 = 63


def _config(tmp_path, **extra):
    config = {
        "arms": {
            "a": {"command": [sys.executable, "-c", "print(1.0)"], "stdout_metric": True},
            "b": {"command": [sys.executable, "-c", "print(2.0)"], "stdout_metric": True},
        },
        "metric": "value",
        "max_trials": 3,
        "warmup": 0,
        "sequential": False,
        **extra,
    }
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(config))
    return path


def test_run_executes_a_config_and_writes_reports(tmp_path, capsys):
    config = _config(tmp_path)
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["run", str(config), "--out", str(out_json), "--out", str(out_md)]) == 0
    assert "## Verdict" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert data["samples"]["b"]["value"] == [2.0, 2.0, 2.0]
    assert out_md.read_text().startswith("# A/B experiment")


def test_run_with_callable_arms_in_toml(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_text(
        'metric = "x"\nmax_trials = 4\nwarmup = 0\nsequential = false\n'
        '[arms.a]\ncallable = "statistics:fmean"\nconfig = {data = [1, 2]}\n'
        '[arms.b]\ncallable = "statistics:fmean"\nconfig = {data = [2, 2]}\n'
    )
    assert main(["run", str(path)]) == 0
    assert "| b | 4 | 2 |" in capsys.readouterr().out


FSUM = {"callable": "math:fsum"}
COMMANDS = {"a": {"command": ["x"]}, "b": {"command": ["y"]}}


@pytest.mark.parametrize(
    "config, match",
    [
        ({"arms": []}, "needs an 'arms' table"),
        ({"arms": {"a": {}, "b": {}}}, "exactly one of 'command' or 'callable'"),
        (
            {"arms": {"a": {"callable": "nope_module:f"}, "b": {"callable": "math:fsum"}}},
            "cannot be loaded",
        ),
        ({"arms": {"a": {"callable": "math"}, "b": {"callable": "math:fsum"}}}, "must look like"),
        (
            {"arms": {"a": {"command": ["x"]}, "b": {"command": ["y"]}}, "shedule": "abba"},
            "unknown config keys",
        ),
        (
            {"arms": {"a": {"command": ["x"]}, "b": {"command": ["y"]}}, "schedule": "x"},
            "schedule 'x'",
        ),
    ],
)
def test_bad_configs_are_explained(tmp_path, capsys, config, match):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert main(["run", str(path)]) == 2
    assert match in capsys.readouterr().err


def test_unparsable_config_is_explained(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text("{arms:")
    assert main(["run", str(path)]) == 2
    assert "cannot be parsed" in capsys.readouterr().err


def test_failing_command_arm_is_explained(tmp_path, capsys):
    config = _config(tmp_path)
    data = json.loads(config.read_text())
    data["arms"]["b"]["command"] = [sys.executable, "-c", "import sys; sys.exit('broken')"]
    config.write_text(json.dumps(data))
    assert main(["run", str(config)]) == 2
    assert "exited with 1" in capsys.readouterr().err


def test_module_entry_point_runs(files):
    done = subprocess.run(
        [sys.executable, "-m", "kpt.abtest", "compare", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "significantly better" in done.stdout
