"""kpt's nox sessions, generated from the tree.

Every distribution is a folder with a pyproject.toml under packages/ or the simulator/
folder. Its `[tool.kpt]` table says what to import (`import = "kpt.wire"`) and whether it
must stay free of torch (`torch-free = true`). `nox -l` is the menu.
"""

from __future__ import annotations

import os
import re
import shlex
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
            "--durations=8",  # the slowest tests, in every CI log: where the suite's time goes
            *session.posargs,
            # importlib mode puts no test folder on sys.path: name it, so a test can import the
            # helper modules beside it (subprocess entry points, shared model factories).
            env={"TRITON_INTERPRET": "1", "PYTHONPATH": str(package.path / "tests")},
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


def _distributions(pyproject: Path) -> set[str]:
    """The names the root pyproject.toml's [tool.uv.sources] takes from this checkout."""
    sources = tomllib.loads(pyproject.read_text()).get("tool", {}).get("uv", {}).get("sources", {})
    return {name.lower() for name, source in sources.items() if source.get("workspace")}


@nox.session
def build(session: nox.Session) -> None:
    """Wheel and sdist of every package into dist/, checked, ready to publish (no upload)."""
    session.install("uv", "build")
    out = ROOT / "dist"
    shutil.rmtree(out, ignore_errors=True)
    for package in PACKAGES.values():
        session.run(
            "uv", "build", "--quiet", "--wheel", "--sdist", "--out-dir", str(out),
            str(package.path),
        )  # fmt: skip
    problems = _check_dist(out)
    if problems:
        session.error("dist/ is not ready to publish:\n  " + "\n  ".join(problems))
    session.log(f"dist/: {len(list(out.iterdir()))} files, a wheel and an sdist per package")


def _check_dist(out: Path) -> list[str]:
    """Every package has both files, and no wheel depends on a path (a checkout is not an index)."""
    import zipfile

    problems = []
    for package in PACKAGES.values():
        stem = package.name.replace("-", "_")
        wheels = sorted(out.glob(f"{stem}-*.whl"))
        if not wheels or not list(out.glob(f"{stem}-*.tar.gz")):
            problems.append(f"{package.name}: missing wheel or sdist in {out}")
            continue
        with zipfile.ZipFile(wheels[0]) as wheel:
            metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            text = wheel.read(metadata).decode()
        for line in text.splitlines():
            if line.startswith("Requires-Dist:") and ("@ file:" in line or "@ /" in line):
                problems.append(f"{package.name}: {line} (a path dependency cannot be published)")
    return problems


def _documented_install(readme: Path, marker: str = "") -> str:
    """The first `uv pip install` line in a README's "## Install" section (or after `marker`)."""
    text = readme.read_text()
    if marker:
        section = text.split(marker, 1)[1] if marker in text else ""
    else:
        match = re.search(r"^## Install\b.*?(?=^## |\Z)", text, flags=re.M | re.S)
        section = match.group(0) if match else ""
    commands = [
        line.strip() for line in section.splitlines() if line.strip().startswith("uv pip install")
    ]
    return commands[0] if commands else ""


@nox.session
def install(session: nox.Session) -> None:
    """Each README's documented install command in a fresh venv, then import what it installed."""
    session.install("uv")
    missing = sorted(set(PACKAGES) - _distributions(ROOT / "pyproject.toml"))
    if missing:
        session.error(
            f"the root pyproject.toml's [tool.uv.sources] lacks {', '.join(missing)}: add "
            "`NAME = { workspace = true }` so that installs take it from this checkout"
        )
    checks = [("README.md", _documented_install(ROOT / "README.md", "<!-- ci:install -->"), ())]
    for package in PACKAGES.values():
        readme = package.path / "README.md"
        checks.append((str(readme.relative_to(ROOT)), _documented_install(readme), (package,)))
    undocumented = [where for where, command, _ in checks if not command]
    if undocumented:
        session.error(
            "no `uv pip install` command in the Install section of " + ", ".join(undocumented)
        )
    root = Path(tempfile.mkdtemp(prefix="kpt-install-"))
    try:
        for i, (where, command, packages) in enumerate(checks):
            venv = root / f"venv-{i}"
            session.run("uv", "venv", "--quiet", "--python", session.python or "3.11", str(venv))
            # The user's shell: that venv active. UV_PYTHON too, as nox sets VIRTUAL_ENV itself.
            env = {
                "VIRTUAL_ENV": str(venv), "UV_PYTHON": str(venv / "bin" / "python"),
                "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                "UV_CONSTRAINT": CONSTRAINTS, **_uv_env(),
            }  # fmt: skip
            session.log(f"{where}: {command}")
            session.run("bash", "-c", command, env=env, external=True)
            session.run(str(venv / "bin" / "python"), "-c", _import_check(packages, command),
                        external=True)  # fmt: skip
            shutil.rmtree(venv, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _import_check(packages: tuple[Package, ...], command: str) -> str:
    """Import what the command installed (by its folders), and keep torch-free ones torch-free."""
    folders = {word.split("[", 1)[0].rstrip("/") for word in shlex.split(command)}
    named = packages or tuple(
        p for p in PACKAGES.values() if f"./{p.path.relative_to(ROOT)}" in folders
    )
    check = "import importlib, importlib.util, sys\n"
    for package in named:
        check += f"importlib.import_module({package.import_name!r})\n"
    if named and all(p.torch_free for p in named) and "[" not in command:
        check += "assert importlib.util.find_spec('torch') is None, 'torch was installed'\n"
    return check


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
    "install",  # each README's install command in a fresh venv, as a user types it
    "integration",
]

if os.environ.get("KPT_NOX_LIST_PACKAGES"):  # debugging aid: show what discovery found
    for _p in PACKAGES.values():
        print(_p)
