"""Knowing promptly that a LOCAL daemon died, without short heartbeats.

The daemon computes values on its serving thread, so while it works through a long queue it
answers nobody, heartbeats included. Clients of a daemon on this host therefore use a wire
heartbeat longer than a call's timeout (a long computation, or a stopped daemon, is never
mistaken for death, and the connection that holds the client's memory stays up) and watch the
daemon's pid instead: when the process is gone the watcher closes the wire client, which fails
any call in flight at once. The same thread sends the daemon a "ping" at the daemon's own
heartbeat interval, so a daemon that forgets silent clients (over ZeroMQ) keeps hearing from
this one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

LOCAL_HEARTBEAT_S = 10.0  # wire heartbeat for daemons on this host (window: 3 intervals)
REMOTE_HEARTBEAT_S = 1.0
POLL_S = 0.2


def is_local_endpoint(endpoint: str) -> bool:
    return endpoint.startswith(
        ("unix://", "ipc://", "tcp://127.", "tcp://localhost:", "tcp://[::1]:")
    )


def process_state(pid: int) -> str | None:
    """The one-letter state /proc gives (R running, S sleeping, T stopped, Z zombie...), or
    None where /proc cannot tell."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, i.e. exited but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    return process_state(pid) not in ("Z", "X")  # None (no /proc): trust kill(0)


def same_host_pid(hello: dict) -> int | None:
    """The daemon's pid if it runs on this host and is visible from here, else None."""
    pid, host = hello.get("pid"), hello.get("host")
    if type(pid) is not int or host != socket.gethostname() or pid <= 0:
        return None
    return pid if pid_alive(pid) else None  # another pid namespace: cannot watch it


class PidWatcher:
    """Calls `on_death` once, from a daemon thread, when `pid` stops running; meanwhile calls
    `keepalive` every `every` seconds (the daemon must keep hearing from a client whose own
    wire heartbeat is long, or it forgets the client and frees its memory)."""

    def __init__(
        self, pid: int, on_death: Callable[[], None], keepalive: Callable[[], None], every: float
    ) -> None:
        self.pid = pid
        self.dead = False
        self._stop = threading.Event()
        self._on_death = on_death
        self._keepalive = keepalive
        self._every = every
        self._thread = threading.Thread(
            target=self._watch, name=f"kpt-sim watch {pid}", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        next_keepalive = time.monotonic()
        while not self._stop.wait(POLL_S):
            if not pid_alive(self.pid):
                self.dead = True
                self._on_death()
                return
            if time.monotonic() >= next_keepalive:
                next_keepalive = time.monotonic() + self._every
                try:
                    self._keepalive()
                except Exception:  # closing under us: the next round ends the loop
                    pass

    def stop(self) -> None:
        self._stop.set()
