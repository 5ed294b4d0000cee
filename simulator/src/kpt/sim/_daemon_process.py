"""start_daemon(): a simulator daemon in a child process that cannot outlive its parent."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

READY_PREFIX = "kpt-sim ready "
TOKEN_FILE = "admin.token"  # the owner's token, next to the socket in the daemon's private folder


class DaemonStartError(RuntimeError):
    """The daemon process exited or stayed silent before it was ready to serve."""


class DaemonHandle:
    """A running daemon: `.endpoint` to connect to, `.admin_token` (the owner's: pass it to
    SimClient to reset the daemon or inject faults), `.stop()` (also on garbage collection)."""

    def __init__(
        self, process: subprocess.Popen, endpoint: str, workdir: Path, admin_token: str
    ) -> None:
        self.process = process
        self.endpoint = endpoint
        self.workdir = workdir
        self.admin_token = admin_token
        self._finalizer = weakref.finalize(self, _stop, process, workdir, 5.0, os.getpid())

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the daemon to exit (SIGTERM), kill it after `timeout`, remove its tmp dir."""
        if self._finalizer.detach():
            _stop(self.process, self.workdir, timeout, os.getpid())

    def __enter__(self) -> DaemonHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        return f"DaemonHandle(endpoint={self.endpoint!r}, pid={self.pid}, {state})"


def _stop(process: subprocess.Popen, workdir: Path, timeout: float, owner: int) -> None:
    if os.getpid() != owner:
        return  # a forked child exiting must not stop its parent's daemon
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process.stdout:
        process.stdout.close()
    shutil.rmtree(workdir, ignore_errors=True)


def start_daemon(
    profile: str = "h100-sxm",
    devices: int = 1,
    topology: str = "switch",
    numerics: bool = True,
    executor: str = "numpy",
    faults: str | os.PathLike | None = None,
    endpoint: str | None = None,
    startup_timeout: float = 60.0,
    extra_args: tuple[str, ...] = (),
    executor_options: dict | None = None,
) -> DaemonHandle:
    """Start `python -m kpt.sim serve` on a unix:// endpoint in a new private tmp dir (0700);
    wait till it serves. This process is the daemon's owner: the handle holds its token.

    The child polls this process's pid and exits when it is gone, so a crash here leaves no orphan.
    """
    workdir = Path(tempfile.mkdtemp(prefix="kpt-sim-"))
    # unix://: the same envelope as ipc:// without ZeroMQ's I/O threads, so a small call costs
    # about a third (see kpt-wire's README); ipc:// and tcp:// endpoints work as well.
    endpoint = endpoint or f"unix://{workdir}/daemon.sock"
    log_path = workdir / "daemon.log"
    command = [
        sys.executable, "-m", "kpt.sim", "serve",
        "--profile", profile, "--devices", str(devices), "--topology", topology,
        "--numerics", "on" if numerics else "off", "--executor", executor,
        "--endpoint", endpoint, "--parent-pid", str(os.getpid()), "--cleanup-dir", str(workdir),
        "--admin-token-file", str(workdir / TOKEN_FILE),
    ]  # fmt: skip
    if faults is not None:
        command += ["--faults", os.fspath(faults)]
    for key, value in (executor_options or {}).items():
        command += ["--executor-option", f"{key}={json.dumps(value)}"]
    command += list(extra_args)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        ready = _wait_ready(process, startup_timeout, log_path)
    except BaseException:
        _stop(process, workdir, 2.0, os.getpid())
        raise
    return DaemonHandle(process, ready, workdir, (workdir / TOKEN_FILE).read_text().strip())


def _wait_ready(process: subprocess.Popen, timeout: float, log_path: Path) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.1)
        if readable:
            line = process.stdout.readline()
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
            if not line and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
    log = _log_tail(log_path)
    if process.poll() is None:
        raise DaemonStartError(f"simulator daemon not ready after {timeout:.0f} s{log}")
    raise DaemonStartError(f"simulator daemon exited with code {process.returncode}{log}")


def _log_tail(log_path: Path) -> str:
    try:
        text = log_path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return ":\n" + "\n".join(text.splitlines()[-20:]) if text else ""
