"""Discovery leaves torch as it was; kpt_sim registers on first use (issue 13).

Each check runs in a fresh interpreter: PrivateUse1 can be taken once per process, and this
test session's own kpt_sim already took it. Three interpreters in all (each imports torch, which
takes tens of seconds on a loaded machine); the one that uses the device connects to this
session's daemon instead of starting its own.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from kpt.adapters.sim import _runtime

CHILD_TIMEOUT_S = 280
pytestmark = pytest.mark.timeout(CHILD_TIMEOUT_S + 20)

PRELUDE = """
import json, sys, torch
import kpt.hal as hal

def torch_state():
    accelerator = torch.accelerator.current_accelerator()
    return {
        "privateuse1": torch._C._get_privateuse1_backend_name(),
        "accelerator": None if accelerator is None else accelerator.type,
        "client_imported": "kpt.adapters.sim" in sys.modules,
    }

UNTOUCHED = {"privateuse1": "privateuseone", "accelerator": None, "client_imported": False}
"""


def run_fresh(body: str, **env: str) -> dict:
    """Run PRELUDE + body in a new interpreter; body prints one JSON line, returned parsed."""
    code = PRELUDE + textwrap.dedent(body)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KPT_")}
    environment.update({"KPT_SIM_DEVICES": "1", **env})
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_listing_selecting_and_loading_the_other_halves_leave_torch_untouched():
    result = run_fresh("""
        chosen = hal.select(simulated=False)
        listed = [d.name for d in hal.devices()]
        sim = [a for a in hal.adapters() if a.name == "sim"][0]
        import runpy
        sys.argv = ["kpt", "devices", "--json"]
        try:
            runpy.run_module("kpt.hal", run_name="__main__")  # `kpt devices --json`
        except SystemExit:
            pass
        # A process that chose the CPU pins memory the CPU way.
        loader = torch.utils.data.DataLoader(torch.arange(8.0), batch_size=4, pin_memory=True)
        batches = [b.tolist() for b in loader]
        # What the daemon loads (the executor half) never imports the client either.
        from kpt.sim import load_executor
        executor = type(load_executor("torch")).__module__
        print(json.dumps({"chosen": chosen.name, "listed": listed, "sim": sim.status,
                          "batches": batches, "executor": executor,
                          "state": torch_state(), "untouched": torch_state() == UNTOUCHED}))
    """)
    assert result["chosen"] == "cpu:0"
    assert "kpt_sim:0" in result["listed"] and result["sim"] == "loaded"
    assert result["batches"] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    assert result["executor"].startswith("kpt.adapters.sim_executor")
    assert result["untouched"], result["state"]


def test_the_device_registers_on_first_use_of_a_selected_device(sim):
    endpoint = _runtime.runtime().daemon.endpoint
    result = run_fresh(
        """
        device = hal.select(adapter="sim")
        before = torch_state()
        x = torch.arange(4.0, device=device.torch_device)  # first use: registers kpt_sim
        values = (x * 2).cpu().tolist()
        pinned = torch.ones(3).pin_memory().is_pinned()
        print(json.dumps({"before": before == UNTOUCHED, "after": torch_state(),
                          "values": values, "pinned": pinned}))
        """,
        KPT_SIM_ENDPOINT=endpoint,
    )
    assert result["before"]
    assert result["after"] == {
        "privateuse1": "kpt_sim",
        "accelerator": "kpt_sim",
        "client_imported": True,
    }
    assert result["values"] == [0.0, 2.0, 4.0, 6.0]
    assert result["pinned"]


def test_privateuse1_conflicts_are_reported_for_both_sides():
    result = run_fresh("""
        from kpt.hal import Adapter, HealthReport, HealthState, Probe, Registry

        class OtherChip(Adapter):
            name, device_type, uses_privateuse1 = "otherchip", "otherchip", True
            def probe(self): return Probe.found(1, "a test double")
            def capabilities(self, index): raise AssertionError("a loser is not enumerated")
            def health(self, index): return HealthReport(HealthState.HEALTHY, "")
            def collectives_backend(self): return None
            def triton_target(self): return None

        registry = Registry()
        registry.register(OtherChip)
        both = {a.name: [a.status, a.reason] for a in registry.adapters()}
        untouched = torch_state() == UNTOUCHED
        # Another backend already holds the slot: sim is a conflict, and is not imported.
        torch.utils.rename_privateuse1_backend("otherchip")
        sim = [a for a in Registry().adapters() if a.name == "sim"][0]
        print(json.dumps({"both": both, "untouched": untouched, "taken": [sim.status, sim.reason],
                          "imported": "kpt.adapters.sim" in sys.modules}))
    """)
    both = result["both"]
    assert both["sim"][0] == both["otherchip"][0] == "conflict", both
    assert "PrivateUse1" in both["sim"][1] and "otherchip" in both["sim"][1]
    assert result["untouched"]
    status, reason = result["taken"]
    assert status == "conflict" and "'otherchip'" in reason and "KPT_ADAPTERS" in reason
    assert not result["imported"]
