"""`kpt-sim serve | profiles | replay`, run as `python -m kpt.sim` (as the console script)."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys

import pytest

from kpt.sim import SimClient, profiles
from kpt.sim._cli import main


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kpt.sim", *args], capture_output=True, text=True, timeout=timeout
    )


def test_profiles_prints_one_row_per_shipped_profile_with_headline_figures(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "bf16 matrix TFLOP/s" in out[0] and "memory GiB" in out[0]
    names = [line.split()[0] for line in out[2:]]
    assert names == profiles()


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "ops.json"
    ops = [
        {"op": "launch", "device": 0, "class": "matmul", "flops": 1e9, "bytes": 1e6},
        {"op": "launch", "device": 1, "class": "elementwise", "flops": 1e6, "bytes": 1e6},
        {"op": "copy", "src": 0, "dst": 1, "bytes": 1_000_000},
        {"op": "sync"},
    ]
    doc = {"format": "kpt-sim-ops", "version": 1, "profile": "test-asic", "devices": 2, "ops": ops}
    path.write_text(json.dumps(doc))
    return path


def test_replay_prints_per_device_rows_and_the_predicted_total(trace, capsys):
    assert main(["replay", str(trace)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("predicted total: ") and "(simulated)" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [r[0] for r in rows] == ["0", "1"]
    assert main(["replay", str(trace), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["predicted_s"] > 0
    assert [d["device"] for d in summary["devices"]] == [0, 1]


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_serve_rejects_an_unknown_profile_naming_the_shipped_ones():
    result = _cli("serve", "--profile", "h900")
    assert result.returncode == 2
    assert "profile 'h900' not found" in result.stderr and "h100-sxm" in result.stderr


def test_serve_rejects_a_bad_fault_file_naming_the_field(tmp_path):
    faults = tmp_path / "faults.toml"
    faults.write_text('[[fault]]\nkind = "device_lost"\ndevice = 0\nwhen = 3\n')
    result = _cli("serve", "--faults", str(faults))
    assert result.returncode == 2
    assert "when" in result.stderr and str(faults) in result.stderr


def test_serve_rejects_profile_and_device_counts_that_disagree():
    result = _cli("serve", "--profile", "h100-sxm:2,mi300x:2", "--devices", "3")
    assert result.returncode == 2
    assert "4 devices" in result.stderr or "lists 4" in result.stderr


def test_serve_mixed_cluster_on_tcp_then_exits_on_sigterm_writing_its_record(tmp_path):
    record = tmp_path / "ops.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "kpt.sim", "serve", "--profile", "test-asic:1,h100-sxm:1",
         "--endpoint", "tcp://127.0.0.1:0", "--numerics", "off", "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "daemon printed nothing within 60 s"
        line = process.stdout.readline()
        assert line.startswith("kpt-sim ready tcp://127.0.0.1:")
        with SimClient(line.split()[-1]) as c:
            assert [d["profile"] for d in c.devices()] == ["test-asic", "h100-sxm"]
            assert c.numerics is False
            c.alloc(1, 1 << 20)
            c.synchronize()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        doc = json.loads(record.read_text())
        assert doc["profile"] == "test-asic:1,h100-sxm:1"
        assert [op["op"] for op in doc["ops"]] == ["alloc", "sync"]
        assert main(["replay", str(record)]) == 0  # the trace replays as recorded
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        process.stdout.close()
        process.stderr.close()


def test_executor_options_reach_the_executor_and_bad_ones_are_named(capsys):
    from kpt.sim._cli import _options

    assert _options(["threads=2", "name=fast", "exact=true"]) == {
        "threads": 2, "name": "fast", "exact": True,
    }  # fmt: skip
    result = _cli("serve", "--executor-option", "threads")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr
    result = _cli("serve", "--executor", "nope")
    assert result.returncode == 2 and "'nope' not found" in result.stderr
    result = _cli("serve", "--executor-option", "threads=2")  # numpy takes no options
    assert result.returncode == 2 and "rejected options ['threads']" in result.stderr
