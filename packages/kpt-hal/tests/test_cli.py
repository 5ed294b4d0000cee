import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint

import kpt.hal as hal
from kpt.hal import HealthReport, HealthState
from kpt.hal._cli import main


def test_devices_json_lists_every_device(empty_registry, fake_adapter, capsys):
    empty_registry.register(fake_adapter("gpu", count=2))
    assert main(["devices", "--json"], registry=empty_registry) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["torch_device"] for r in records] == ["cpu:0", "cuda:0", "cuda:1"]
    gpu = records[1]
    assert gpu["capabilities"]["peak_flops"]["bfloat16"]["source"] == "nominal"
    assert gpu["health"]["state"] == "healthy"


def test_devices_text_shows_health(empty_registry, fake_adapter, capsys):
    empty_registry.register(fake_adapter("gpu", count=1))
    empty_registry.record_health(
        empty_registry.device("cuda:0"), HealthReport(HealthState.DEGRADED, "hot")
    )
    main(["devices"], registry=empty_registry)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cuda:0"))
    assert "degraded" in line and "Fake X1" in line


def test_doctor_explains_every_adapter(monkeypatch, fake_adapter, capsys):
    monkeypatch.setenv(hal.ALLOW_LIST_ENV, "gpu,empty,ghost,typo")
    registry = hal.Registry([EntryPoint("ghost", "kpt_missing_mod:A", hal.ENTRY_POINT_GROUP)])
    registry.register(fake_adapter("gpu", count=1))
    registry.register(fake_adapter("empty", count=0))
    registry.register(fake_adapter("other", device_type="xpu"))
    assert main(["doctor"], registry=registry) == 1  # something was rejected
    text = capsys.readouterr().out
    assert "[ok] gpu" in text and "loaded: 1 cuda device(s)" in text
    assert "no hardware: no fake cards plugged in" in text
    assert "kpt_missing_mod" in text
    assert "typo not found: misspelled or not installed" in text
    assert "not in KPT_ADAPTERS" in text


def test_doctor_json_and_exit_code(empty_registry, fake_adapter, capsys):
    empty_registry.register(fake_adapter("a", device_type="cuda"))
    empty_registry.register(fake_adapter("b", device_type="cuda"))
    assert main(["doctor", "--json"], registry=empty_registry) == 1
    report = json.loads(capsys.readouterr().out)
    statuses = {a["name"]: a["status"] for a in report["adapters"]}
    assert statuses == {"cpu": "loaded", "a": "conflict", "b": "conflict"}
    assert [d["torch_device"] for d in report["devices"]] == ["cpu:0"]


def test_console_script_runs_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != hal.ALLOW_LIST_ENV}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from kpt.hal._cli import main; sys.exit(main())",
         "doctor", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert any(a["name"] == "cpu" and a["status"] == "loaded" for a in report["adapters"])
