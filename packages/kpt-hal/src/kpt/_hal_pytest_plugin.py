"""pytest plugin of kpt-hal (entry point pytest11 `kpt_hal`): the kit's two options.

pytest loads it into every run where kpt-hal is installed, so it lives outside the kpt.hal
package on purpose: importing anything under kpt.hal imports torch (1-2 s). This module
imports neither; kpt.hal and torch load only when the standard suite is collected
(`--kpt-adapter NAME` alone, `--pyargs kpt.hal.testing`, or a module subclassing
AdapterConformance).
"""

from __future__ import annotations

import pytest

SUITE = "kpt.hal.testing"  # the package holding the suite's command-line entry (test_adapter.py)

pytest.register_assert_rewrite("kpt.hal.testing._suite", "kpt.hal.testing._checks")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kpt-hal", "kpt.hal adapter conformance kit")
    group.addoption(
        "--kpt-adapter",
        action="store",
        dest="kpt_adapter",
        default=None,
        metavar="NAME",
        help="run the kpt.hal standard suite against adapter NAME (an entry point of group "
        "kpt.adapters, e.g. cpu, nvidia, sim). Without test paths it runs the suite alone "
        "(as `--pyargs kpt.hal.testing` does); with paths, it only names the adapter for them",
    )
    group.addoption(
        "--kpt-require-hardware",
        action="store_true",
        dest="kpt_require_hardware",
        default=False,
        help="fail, instead of skip, the tests that need a device when the adapter finds none",
    )


def pytest_configure(config: pytest.Config) -> None:
    """`pytest --kpt-adapter NAME` with no test paths: collect the standard suite, not the
    current folder (where, in most places, there is nothing to collect)."""
    if not config.getoption("kpt_adapter", None):
        return
    given = getattr(pytest.Config, "ArgsSource", None)  # pytest >= 7.2
    if given is None or config.args_source == given.ARGS:
        return  # the user chose what to collect
    config.option.pyargs = True
    config.args = [SUITE]


def pytest_report_header(config: pytest.Config) -> str | None:
    name = config.getoption("kpt_adapter", None)
    return f"kpt.hal conformance kit: adapter {name!r}" if name else None
