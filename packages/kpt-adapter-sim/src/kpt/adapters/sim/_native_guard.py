"""Build, cache and load kpt_sim's native library (csrc/*.cpp): the device guard that reports
the real device count to autograd and synchronizes devices, and the PrivateUse1 hooks and device
allocator torch's pinned memory and torch.accelerator.memory need (privateuse1_runtime.cpp).

The library is plain C symbols over c10 and the autograd engine's headers, compiled with the
system C++ compiler and loaded with ctypes: no Python headers, no pybind11, no ninja. It is built
once per (source, torch build) into a cache directory shared by processes (a file lock keeps
concurrent builders apart; the result is renamed into place whole). Where it is cached and
which compiler builds it come from ``NativeSettings`` (``KPT_SIM_EXTENSIONS_DIR``, ``CXX``).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kpt.adapters.sim_hal._settings import NativeSettings

_SOURCES = tuple(sorted((Path(__file__).with_name("csrc")).glob("*.cpp")))
_SOURCE = _SOURCES[0] if _SOURCES else Path(__file__).with_name("csrc") / "device_count_guard.cpp"
_BUILD_TIMEOUT_S = 600
_log = logging.getLogger("kpt.adapters.sim")


class NativeGuardUnavailable(RuntimeError):
    """The native guard could not be built or loaded; the message says why."""


def cache_dir(settings: NativeSettings | None = None) -> Path:
    """KPT_SIM_EXTENSIONS_DIR, else TORCH_EXTENSIONS_DIR/kpt_sim, else ~/.cache/kpt/extensions."""
    settings = settings or NativeSettings.from_environ()
    if settings.extensions_dir:
        return Path(settings.extensions_dir)
    return Path.home() / ".cache" / "kpt" / "extensions"


def library_path(directory: Path | None = None, settings: NativeSettings | None = None) -> Path:
    """Where the library for this source and this torch build lives (built or not)."""
    key = hashlib.sha256(b"".join(source.read_bytes() for source in _SOURCES or (_SOURCE,)))
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    key.update(f"{torch.__version__} {torch.version.git_version} {abi} {sys.platform}".encode())
    name = f"kpt_sim_device_count_guard_{key.hexdigest()[:16]}.so"
    return (directory or cache_dir(settings)) / name


def _compile_command(output: Path, compiler: str) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    if shutil.which(compiler) is None:
        raise NativeGuardUnavailable(
            f"no C++ compiler: {compiler!r} is not on PATH (install g++ or clang++, or set CXX)"
        )
    torch_lib = Path(torch.__file__).parent / "lib"
    includes = [arg for path in include_paths() for arg in ("-I", path)]
    return [
        compiler, "-O1", "-std=c++20", "-fPIC", "-shared", "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", *includes,
        *(str(source) for source in _SOURCES), "-L", str(torch_lib), "-lc10", "-ltorch_cpu",
        f"-Wl,-rpath,{torch_lib}", "-o", str(output),
    ]  # fmt: skip


def build(output: Path, compiler: str | None = None) -> float:
    """Compile the library to ``output`` (atomically) with ``compiler`` (default: CXX, else
    c++); return the seconds it took."""
    compiler = compiler if compiler is not None else NativeSettings.from_environ().compiler
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        partial = Path(scratch) / output.name
        try:
            done = subprocess.run(
                _compile_command(partial, compiler), capture_output=True, text=True,
                timeout=_BUILD_TIMEOUT_S,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NativeGuardUnavailable(f"compiling {_SOURCE.name} failed: {error}") from error
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-1500:]
            raise NativeGuardUnavailable(
                f"compiling {_SOURCE.name} failed (exit {done.returncode}): {tail}"
            )
        os.replace(partial, output)
    return time.perf_counter() - started


def _build_once(path: Path, compiler: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same file
        if not path.exists():
            _log.info("kpt_sim: compiling the native device guard into %s (once)", path)
            seconds = build(path, compiler)
            _log.info("kpt_sim: native device guard compiled in %.1f s", seconds)


def load(directory: Path | None = None, settings: NativeSettings | None = None) -> ctypes.CDLL:
    """The loaded library, built first when the cache has none for this torch build (in
    ``directory``, default the settings' cache directory)."""
    settings = settings or NativeSettings.from_environ()
    path = library_path(directory, settings)
    if not path.exists():
        try:
            _build_once(path, settings.compiler)
        except OSError as error:
            raise NativeGuardUnavailable(
                f"cannot build into {path.parent}: {error}; point KPT_SIM_EXTENSIONS_DIR at a "
                "writable directory"
            ) from error
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        raise NativeGuardUnavailable(f"loading {path} failed: {error}") from error
    library.kpt_guard_install.argtypes = [ctypes.c_int]
    library.kpt_guard_install.restype = ctypes.c_int
    library.kpt_guard_count.restype = ctypes.c_int
    library.kpt_engine_device_queues.restype = ctypes.c_long
    return library


def install(library: ctypes.CDLL, count: int) -> None:
    """Put the counting guard in front of the registered PrivateUse1 guard (or update its count)."""
    code = library.kpt_guard_install(count)
    if code == 1:
        raise NativeGuardUnavailable("no PrivateUse1 device guard is registered yet")
    if code == 2:
        raise ValueError(f"device count {count} is out of range: torch allows 1..127 per type")


def engine_device_queues(library: ctypes.CDLL) -> int | None:
    """How many device ready queues torch's autograd engine made; None before it started."""
    queues = library.kpt_engine_device_queues()
    return None if queues < 0 else int(queues)
