"""What each pyproject.toml declares matches what its code imports, and installs stay local.

Read from the source tree, not from installed metadata: a package that imports a sibling it
does not declare works in the workspace (the sibling is there anyway) and fails in a user's
fresh venv; an extra that names a sibling nothing imports costs users an install for nothing.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = [*sorted(ROOT.glob("packages/*/pyproject.toml")), ROOT / "simulator" / "pyproject.toml"]


def _projects() -> dict[str, tuple[Path, dict]]:
    found = {}
    for pyproject in FOLDERS:
        data = tomllib.loads(pyproject.read_text())
        found[data["project"]["name"].lower()] = (pyproject.parent, data)
    return found


PROJECTS = _projects()
IMPORT_NAMES = {
    name: data.get("tool", {}).get("kpt", {}).get("import", name.replace("-", "."))
    for name, (_, data) in PROJECTS.items()
}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def _siblings_imported(folder: Path, own: str) -> dict[str, list[str]]:
    """Sibling distribution -> the source files of `folder` that import it."""
    by_module = {module: name for name, module in IMPORT_NAMES.items() if name != own}
    used: dict[str, list[str]] = {}
    for path in sorted((folder / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                for prefix, name in by_module.items():
                    if module == prefix or module.startswith(prefix + "."):
                        used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return used


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_every_sibling_the_code_imports_is_declared(name):
    folder, data = PROJECTS[name]
    project = data["project"]
    declared = {_requirement_name(r) for r in project.get("dependencies", [])}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra not in ("test", "bench"):  # what users install, not what CI installs
            declared |= {_requirement_name(r) for r in requirements}
    undeclared = {
        sibling: files
        for sibling, files in _siblings_imported(folder, name).items()
        if sibling not in declared
    }
    assert not undeclared, (
        f"{name} imports siblings it does not declare (add them to dependencies or to the "
        f"extra that needs them): {undeclared}"
    )


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_every_sibling_an_extra_names_is_used(name):
    """Imported by the code, needed by a sibling it imports (named to pin its range), or an
    adapter: kpt.hal finds adapters through entry points, so nothing imports them by name."""
    folder, data = PROJECTS[name]
    used = _with_dependencies(set(_siblings_imported(folder, name)) | _adapters())
    unused = [
        f"[{extra}] {requirement}"
        for extra, requirements in data["project"].get("optional-dependencies", {}).items()
        if extra not in ("test", "bench")
        for requirement in requirements
        if _requirement_name(requirement) in PROJECTS and _requirement_name(requirement) not in used
    ]
    assert not unused, f"{name} declares extras nothing in its src/ uses: {unused}"


def _adapters() -> set[str]:
    return {
        name
        for name, (_, data) in PROJECTS.items()
        if "kpt.adapters" in data["project"].get("entry-points", {})
    }


def _with_dependencies(names: set[str]) -> set[str]:
    todo, seen = list(names), set(names)
    while todo:
        project = PROJECTS[todo.pop()][1]["project"]
        for requirement in project.get("dependencies", []):
            dependency = _requirement_name(requirement)
            if dependency in PROJECTS and dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


def test_abtest_torch_extra_brings_the_devices_kpt_hal_finds():
    """benchmark_devices ranks every kpt device; without kpt-hal it can only see the CPU."""
    requirements = PROJECTS["kpt-abtest"][1]["project"]["optional-dependencies"]["torch"]
    assert "kpt-hal" in {_requirement_name(r) for r in requirements}


def test_every_distribution_installs_from_this_checkout():
    """`uv pip install ./packages/X` takes X's kpt dependencies from [tool.uv.sources]."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sources = root["tool"]["uv"]["sources"]
    local = {name for name, source in sources.items() if source.get("workspace")}
    assert set(PROJECTS) <= local, f"add to [tool.uv.sources]: {sorted(set(PROJECTS) - local)}"
    members = root["tool"]["uv"]["workspace"]["members"]
    assert members == ["packages/*", "simulator"]
