"""kpt's nox sessions, generated from the tree.

Every distribution is a folder with a pyproject.toml under packages/ or the simulator/
folder. Its `[tool.kpt]` table says what to import (`import = "kpt.wire"`) and whether it
must stay free of torch (`torch-free = true`). `nox -l` is the menu.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / "constraints.txt")
LOCAL_WHEELS = Path("/opt/wheels")  # the machine's CPU build of torch lives here

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True


@dataclass(frozen=True, eq=False)
class Package:
    name: str  # distribution name, e.g. "kpt-wire"
    path: Path
    import_name: str  # e.g. "kpt.wire"
    torch_free: bool
    requires: tuple[str, ...]  # names of the project's own packages it depends on
    extras: dict[str, tuple[str, ...]]  # extra -> the project's own packages it names

    @property
    def short(self) -> str:
        return self.name.removeprefix("kpt-")


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()


def _discover() -> dict[str, Package]:
    folders = [*sorted(ROOT.glob("packages/*/pyproject.toml")), ROOT / "simulator/pyproject.toml"]
    raw = {}
    for pyproject in folders:
        if pyproject.exists():
            data = tomllib.loads(pyproject.read_text())
            raw[data["project"]["name"].lower()] = (pyproject.parent, data)
    packages = {}
    for name, (path, data) in raw.items():
        project = data["project"]
        deps = [_requirement_name(r) for r in project.get("dependencies", [])]
        extras = {
            extra: tuple(n for n in map(_requirement_name, reqs) if n in raw and n != name)
            for extra, reqs in project.get("optional-dependencies", {}).items()
        }
        tool = data.get("tool", {}).get("kpt", {})
        packages[name] = Package(
            name=name,
            path=path,
            import_name=tool.get("import", name.replace("-", ".")),
            torch_free=bool(tool.get("torch-free", False)),
            requires=tuple(d for d in deps if d in raw),
            extras=extras,
        )
    return packages


PACKAGES = _discover()


def _closure(package: Package, extras: tuple[str, ...] = ()) -> list[Package]:
    """The package's own-project dependencies (and those its extras name), dependencies first."""
    seen: list[Package] = []

    def visit(p: Package, wanted: tuple[str, ...]) -> None:
        for dep in p.requires + tuple(d for e in wanted for d in p.extras.get(e, ())):
            visit(PACKAGES[dep], ())
        if p not in seen:
            seen.append(p)

    visit(package, extras)
    return seen


def _uv_env() -> dict[str, str]:
    env = {}
    if LOCAL_WHEELS.is_dir():
        env["UV_FIND_LINKS"] = str(LOCAL_WHEELS)
        env["PIP_FIND_LINKS"] = str(LOCAL_WHEELS)
    return env


def _install(session: nox.Session, *packages: Package, extras: tuple[str, ...] = ()) -> None:
    """Install packages from their folders (built as wheels, not editable) with the named extras
    each declares, plus the project's own packages they need, also from their folders."""
    specs: dict[str, str] = {}
    for package in packages:
        own = tuple(e for e in extras if e in package.extras)
        for dep in _closure(package, own):
            specs.setdefault(dep.name, str(dep.path))
        if own:
            specs[package.name] = f"{package.path}[{','.join(own)}]"
    session.install("-c", CONSTRAINTS, *specs.values(), env=_uv_env())


def _make_tests_session(package: Package) -> None:
    def tests(session: nox.Session) -> None:
        # Every extra the package declares: tests of optional features need them installed.
        _install(session, package, extras=tuple(package.extras))
        session.run(
            "pytest",
            str(package.path / "tests"),
            "--import-mode=importlib",
            "-p",
            "no:cacheprovider",
            *session.posargs,
            env={"TRITON_INTERPRET": "1"},
        )

    tests.__doc__ = f"{package.name}: its tests, in a venv holding only it and what it declares."
    nox.session(name=f"tests-{package.short}", tags=["tests"])(tests)


for _package in PACKAGES.values():
    _make_tests_session(_package)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("-c", CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def isolation(session: nox.Session) -> None:
    """Build every wheel, install each alone in a fresh venv, import it, check torch-free ones."""
    session.install("uv", "build")
    wheels = Path(tempfile.mkdtemp(prefix="kpt-wheels-"))
    try:
        for package in PACKAGES.values():
            session.run("uv", "build", "--wheel", "--out-dir", str(wheels), str(package.path))
        for package in PACKAGES.values():
            venv = wheels / f"venv-{package.short}"
            session.run("uv", "venv", "--quiet", "--python", session.python or "3.11", str(venv))
            python = str(venv / "bin" / "python")
            session.run(
                "uv", "pip", "install", "--quiet", "--python", python,
                "-c", CONSTRAINTS, "--find-links", str(wheels), package.name,
                env=_uv_env(),
            )  # fmt: skip
            check = (
                "import importlib, importlib.util, sys\n"
                f"importlib.import_module({package.import_name!r})\n"
                "import kpt\n"
                "assert getattr(kpt, '__file__', None) is None, 'kpt must be a PEP 420 namespace'\n"
            )
            if package.torch_free:
                check += (
                    "assert 'torch' not in sys.modules, 'importing pulled torch'\n"
                    "assert importlib.util.find_spec('torch') is None, 'torch was installed'\n"
                )
            session.run(python, "-c", check, external=True)
            session.log(f"{package.name}: installs alone and imports {package.import_name}")
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


@nox.session
def integration(session: nox.Session) -> None:
    """integration_tests/ against real processes (the simulator daemon)."""
    tests = sorted((ROOT / "integration_tests").glob("test_*.py"))
    if not tests:
        session.skip("integration_tests/ holds no tests yet")
    _install(session, *PACKAGES.values(), extras=("test",))
    session.run(
        "pytest", str(ROOT / "integration_tests"), "--import-mode=importlib",
        "-p", "no:cacheprovider", *session.posargs, env={"TRITON_INTERPRET": "1"},
    )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """Every package's benchmarks/*.py, each printing its table."""
    _install(session, *PACKAGES.values(), extras=("bench",))
    for package in PACKAGES.values():
        for script in sorted((package.path / "benchmarks").glob("bench_*.py")):
            if session.posargs and not any(a in str(script) for a in session.posargs):
                continue
            session.log(f"== {package.name}: {script.name}")
            session.run("python", str(script), env={"TRITON_INTERPRET": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: examples/demo.py on the built-in simulator."""
    _install(session, *PACKAGES.values(), extras=("demo",))
    session.run("python", str(ROOT / "examples" / "demo.py"), *session.posargs)


nox.options.sessions = [
    "lint",
    *(f"tests-{p.short}" for p in PACKAGES.values()),
    "isolation",
    "integration",
]

if os.environ.get("KPT_NOX_LIST_PACKAGES"):  # debugging aid: show what discovery found
    for _p in PACKAGES.values():
        print(_p)
