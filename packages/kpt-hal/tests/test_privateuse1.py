"""register_python_device: one PrivateUse1 backend per process, refused clearly otherwise.

Each case runs in a fresh interpreter: torch's PrivateUse1 slot can be filled only once.
"""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_registers_device_module_and_is_idempotent():
    result = _run("""
        import types, torch
        from kpt.hal import register_python_device
        module = types.ModuleType("fake")
        module.is_available = lambda: True
        module.device_count = lambda: 3
        register_python_device("kpt_fake", module)
        register_python_device("kpt_fake", module)  # same name again: nothing happens
        assert torch._C._get_privateuse1_backend_name() == "kpt_fake"
        assert torch.kpt_fake.device_count() == 3
        assert torch.device("kpt_fake", 1).type == "kpt_fake"
        assert hasattr(torch.Tensor, "kpt_fake") and hasattr(torch.nn.Module, "kpt_fake")
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_second_backend_is_refused_naming_the_first():
    result = _run("""
        import types
        from kpt.hal import PrivateUse1TakenError, register_python_device
        register_python_device("kpt_one", types.ModuleType("one"))
        try:
            register_python_device("kpt_two", types.ModuleType("two"))
        except PrivateUse1TakenError as error:
            print(error)
    """)
    assert result.returncode == 0, result.stderr
    assert "PrivateUse1 is already 'kpt_one'" in result.stdout
    assert "kpt_two" in result.stdout


def test_slot_taken_outside_kpt_is_reported():
    result = _run("""
        import types, torch
        from kpt.hal import PrivateUse1TakenError, register_python_device
        torch.utils.rename_privateuse1_backend("other")
        try:
            register_python_device("kpt_sim", types.ModuleType("sim"))
        except PrivateUse1TakenError as error:
            print(error)
    """)
    assert "already 'other'" in result.stdout and "outside kpt" in result.stdout


def test_bad_names_are_rejected_before_touching_torch():
    result = _run("""
        import types, torch
        from kpt.hal import register_python_device
        for name in ("cuda", "Bad-Name", ""):
            try:
                register_python_device(name, types.ModuleType("m"))
            except ValueError as error:
                print("refused", repr(name))
        assert torch._C._get_privateuse1_backend_name() == "privateuseone"
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("refused") == 3
