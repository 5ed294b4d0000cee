import subprocess
import sys

import kpt.sim

DAEMON_NAMES = {
    "DaemonHandle", "Executor", "SimClient", "TensorRef", "View", "executor_names",
    "load_executor", "start_daemon",
}  # fmt: skip


def test_the_daemon_and_client_names_are_public():
    assert set(kpt.sim.__all__) >= DAEMON_NAMES
    assert sorted(kpt.sim.__all__) == kpt.sim.__all__


def test_daemon_client_and_cli_import_without_torch():
    code = (
        "import sys, kpt.sim, kpt.sim._daemon, kpt.sim._cli, kpt.sim._daemon_thread\n"
        "assert 'torch' not in sys.modules, 'the daemon side pulled torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
