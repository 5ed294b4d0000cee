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
    line = next(x for x in capsys.readouterr().out.splitlines() if x[2:].startswith("cuda:0"))
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


def _simulated_and_real(registry, fake_adapter):
    registry.register(fake_adapter("gpu", count=1, vendor="nvidia", model="NVIDIA H100"))
    registry.register(
        fake_adapter("sim", device_type="mtia", count=1, vendor="nvidia",
                     model="H100 SXM5 80GB", flops=999e12, features=("simulated",))
    )  # fmt: skip
    return registry


def test_devices_text_tells_a_simulator_from_hardware_and_marks_the_pick(
    empty_registry, fake_adapter, capsys
):
    main(["devices"], registry=_simulated_and_real(empty_registry, fake_adapter))
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in lines}
    assert "simulated" in rows["mtia:0"] and "accelerator" in rows["cuda:0"]
    assert "host" in rows["cpu:0"]
    assert rows["cuda:0"].startswith("* ") and not rows["mtia:0"].startswith("*")
    assert "nvidia NVIDIA H100" not in rows["cuda:0"]  # the vendor is not repeated
    assert "nvidia H100 SXM5 80GB" in rows["mtia:0"]  # ... but added where it is missing
    assert lines[-1].startswith("* hal.select() with no needs picks cuda:0 (accelerator)")


def test_devices_text_says_when_only_the_simulator_or_host_is_there(
    empty_registry, fake_adapter, capsys
):
    registry = _simulated_and_real(empty_registry, fake_adapter)
    registry.record_health(registry.device("cuda:0"), HealthReport(HealthState.FAILED, "gone"))
    main(["devices"], registry=registry)
    last = capsys.readouterr().out.splitlines()[-1]
    assert "picks mtia:0 (simulated)" in last and "select(simulated=False)" in last
    registry.record_health(registry.device("mtia:0"), HealthReport(HealthState.FAILED, "x"))
    main(["devices"], registry=registry)
    assert "picks cpu:0 (host); no accelerator here" in capsys.readouterr().out


def test_doctor_marks_simulated_adapters_and_puts_looked_for_on_its_own_line(
    empty_registry, fake_adapter, capsys
):
    registry = _simulated_and_real(empty_registry, fake_adapter)
    registry.register(fake_adapter("empty", count=0))
    assert main(["doctor"], registry=registry) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(x.startswith("[ok] sim") and x.endswith(", simulated") for x in lines)
    assert any(x.startswith("[ok] gpu") and "simulated" not in x for x in lines)
    empty = next(i for i, x in enumerate(lines) if x.startswith("[--] empty"))
    assert lines[empty].endswith("no hardware: no fake cards plugged in")
    assert lines[empty + 1].strip() == "looked for fake cards on /dev/fake*"
    assert lines[-1] == "=> hal.select() with no needs picks cuda:0 (accelerator)"
    info = next(i for i in registry.adapters() if i.name == "empty")
    assert info.looked_for == "fake cards on /dev/fake*"


def test_adapters_left_out_by_the_allow_list_are_not_problems(monkeypatch, fake_adapter, capsys):
    monkeypatch.setenv(hal.ALLOW_LIST_ENV, "gpu")
    registry = hal.Registry(entry_points=[])
    registry.register(fake_adapter("gpu", count=1))
    registry.register(fake_adapter("other", device_type="xpu"))
    assert main(["doctor"], registry=registry) == 0
    text = capsys.readouterr().out
    assert "[--] other    left out: not in KPT_ADAPTERS=gpu" in text
    assert main(["doctor", "--json"], registry=registry) == 0
    statuses = {a["name"]: a["status"] for a in json.loads(capsys.readouterr().out)["adapters"]}
    assert statuses["other"] == "rejected"  # the record keeps its status; only the verdict differs


def test_python_dash_m_runs_the_cli():
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kpt.hal", "devices", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KPT_ADAPTERS": "cpu"},
    )
    assert done.returncode == 0, done.stderr
    assert "cpu:0" in done.stdout
