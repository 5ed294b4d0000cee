"""The kit itself: the command-line entry, skips without hardware, and failures it must catch."""

from __future__ import annotations

pytest_plugins = ["pytester"]

FAKE_ADAPTERS = '''
import kpt.hal as hal
from kpt.hal.testing import AdapterConformance


class Absent(hal.CpuAdapter):
    name = "absent"
    device_type = "absentdev"

    def probe(self):
        return hal.Probe.none("no absent cards in this machine", "absent cards on /dev/absent*")


class Mute(Absent):
    name = "mute"

    def probe(self):
        return hal.Probe.none("")


class Liar(hal.CpuAdapter):
    """Says things about the host CPU that are not true."""

    name = "liar"

    def capabilities(self, index):
        caps = super().capabilities(index)
        return hal.Capabilities(
            vendor=caps.vendor, model=caps.model, index=index, memory_total=caps.memory_total,
            memory_free=caps.memory_free, dtypes=caps.dtypes | {"float128"},
            peak_flops={"float32": hal.Value(0.0, "FLOP/s")},
        )

    def health(self, index):
        return hal.HealthReport(hal.HealthState.DEGRADED, "")

    def collectives_backend(self):
        return "nosuchbackend"
'''


def _subclass(adapter):
    return f"\nclass Test{adapter}(AdapterConformance):\n    adapter = {adapter}\n"


def _outcomes(result):
    return result.parseoutcomes()


def test_command_line_entry_runs_the_suite_on_the_cpu(pytester):
    result = pytester.runpytest("--kpt-adapter", "cpu", "--pyargs", "kpt.hal.testing", "-rs")
    outcomes = _outcomes(result)
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 12  # Triton may skip where it is not installed


def test_without_an_adapter_the_suite_only_skips_and_says_how(pytester):
    result = pytester.runpytest("--pyargs", "kpt.hal.testing", "-rs")
    outcomes = _outcomes(result)
    assert set(outcomes) - {"warnings"} == {"skipped"}
    result.stdout.fnmatch_lines(["*run `pytest --kpt-adapter NAME --pyargs kpt.hal.testing`*"])


def test_a_misspelled_adapter_name_fails_with_what_is_installed(pytester):
    result = pytester.runpytest("--kpt-adapter", "cpux", "--pyargs", "kpt.hal.testing")
    assert _outcomes(result).get("errors", 0) > 0
    result.stdout.fnmatch_lines(["*'cpux' not found: misspelled or not installed*cpu*"])


def test_kpt_adapter_alone_runs_the_suite(pytester):
    """No --pyargs, no path: the option's help promises the standard suite, so run it."""
    # A subprocess: a second in-process run would import Triton's kernels afresh, which aborts.
    result = pytester.runpytest_subprocess("--kpt-adapter", "cpu", "-p", "no:cacheprovider")
    outcomes = _outcomes(result)
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 12
    result.stdout.fnmatch_lines(["*kpt.hal conformance kit: adapter 'cpu'*"])


def test_unrelated_runs_are_untouched(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("--kpt-adapter", "nosuch", "test_plain.py")  # paths given
    result.assert_outcomes(passed=1)
    plain = pytester.runpytest()
    plain.assert_outcomes(passed=1)
    assert "kpt.hal conformance kit" not in plain.stdout.str()


def test_the_plugin_imports_neither_torch_nor_kpt_hal(pytester):
    """Every pytest run where kpt-hal is installed loads the plugin: it must stay light."""
    pytester.makepyfile(
        test_light="""
import sys

def test_light(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("kpt_hal")
    assert pytestconfig.getoption("kpt_adapter") is None
    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("kpt.hal"))
    assert not heavy, heavy
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


def test_no_hardware_skips_device_tests_with_the_probe_reason(pytester):
    pytester.makepyfile(test_absent=FAKE_ADAPTERS + _subclass("Absent"))
    result = pytester.runpytest("-rs")
    outcomes = _outcomes(result)
    assert outcomes["passed"] == 3 and outcomes["skipped"] >= 10 and "failed" not in outcomes
    result.stdout.fnmatch_lines(["*no device 0: no absent cards in this machine*"])
    strict = pytester.runpytest("--kpt-require-hardware")
    assert _outcomes(strict).get("errors", 0) >= 10


def test_a_probe_that_explains_nothing_fails(pytester):
    pytester.makepyfile(test_mute=FAKE_ADAPTERS + _subclass("Mute"))
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*found no device and said nothing about why*"])
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports() if r.failed}
    assert failed == {"test_probe_explains_itself"}


def test_false_capabilities_fail_the_tests_that_check_them(pytester):
    pytester.makepyfile(test_liar=FAKE_ADAPTERS + _subclass("Liar"))
    result = pytester.runpytest()
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports() if r.failed}
    assert failed >= {
        "test_capabilities_are_sane",
        "test_advertised_dtypes_round_trip",
        "test_health_report",
        "test_collectives_backend",
    }
    output = result.stdout.str()
    assert "'float128', which is not a torch dtype name" in output
    assert "health is degraded without a reason" in output
    assert "is_backend_available('nosuchbackend') is False" in output
