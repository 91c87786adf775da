"""The packages lean on each other one way only, read from the source (every import, also those inside functions):

- ``core`` imports none of this project's other packages;
- ``serving`` imports ``core`` and itself; ``export`` imports ``core``, ``serving`` and itself: never ``lifecycle``,
  so the exported server (``core`` and ``serving`` copied whole) runs without it;
- ``devservices`` (dev, test and benchmark servers) may import the product, and the product never imports it: it is
  neither in the wheel nor in a registered model's code;
- ``serving.engine`` (the decoding engine) imports no FastAPI, Starlette or pydantic and nothing of ``serving.http``;
  ``serving.http`` reaches it through the package alone (``Engine`` and what ``serving/engine/__init__.py`` names),
  never a module inside it;
- in ``lifecycle``, only ``lifecycle.integrations`` imports MLflow (torch, transformers, LangChain and boto3 too);
- ``lifecycle.integrations`` (the adapters to MLflow and the libraries) imports neither of the shells above it,
  ``lifecycle.stages`` and ``lifecycle.sweeps``;
- no two modules of the project import each other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "serving", "export", "lifecycle", "devservices")
ALLOWED = {
    "core": {"core"},
    "serving": {"core", "serving"},
    "export": {"core", "serving", "export"},
    "lifecycle": {"core", "serving", "export", "lifecycle"},
    "devservices": {"core", "lifecycle", "devservices"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "skeleton" not in path.parts
    }


def imported(path: Path) -> set[str]:
    """Every name ``path`` imports anywhere in it: modules, and ``package.name`` for a ``from package import name``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """This project's modules that ``path`` imports anywhere in it (a ``from package import name`` that names a
    module counts as that module)."""
    return imported(path) & known


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_it_may(graph, package):
    wrong = {
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package]
    }
    assert not wrong, sorted(wrong)


def third_party(path: Path) -> set[str]:
    """The top-level names of what ``path`` imports from outside this project, anywhere in it."""
    return {name.split(".")[0] for name in imported(path)} - set(PACKAGES)


def test_the_engine_knows_nothing_of_http(graph):
    engine = {name: path for name, path in modules().items() if name.startswith("serving.engine")}
    assert len(engine) > 5, sorted(engine)
    web = sorted(
        f"{name} imports {lib}"
        for name, path in engine.items()
        for lib in third_party(path) & {"fastapi", "starlette", "pydantic", "uvicorn"}
    )
    assert not web, web
    up = sorted(f"{m} imports {t}" for m in engine for t in graph[m] if t.startswith("serving.http"))
    assert not up, up


def test_http_uses_the_engine_through_its_package_alone(graph):
    http = [name for name in graph if name.startswith("serving.http")]
    assert len(http) > 5, http
    inside = sorted(f"{m} imports {t}" for m in http for t in graph[m] if t.startswith("serving.engine."))
    assert not inside, inside
    assert any("serving.engine" in graph[m] for m in http)


def test_in_the_lifecycle_only_the_integrations_import_mlflow_and_the_heavy_libraries():
    heavy = {"mlflow", "torch", "transformers", "langchain_core", "langchain_huggingface", "boto3"}
    wrong = sorted(
        f"{name} imports {lib}"
        for name, path in modules().items()
        if name.startswith("lifecycle") and not name.startswith("lifecycle.integrations")
        for lib in third_party(path) & heavy
    )
    assert not wrong, wrong


def test_the_integrations_import_no_shell_above_them(graph):
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("lifecycle.integrations")
        for target in targets
        if target.startswith(("lifecycle.stages", "lifecycle.sweeps"))
    )
    assert not upward, upward


def test_no_modules_import_each_other(graph):
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_exported_app_imports_nothing_outside_its_packages(tmp_path):
    """What ``mode=export`` copies into the image (``export.bundle.APP_PACKAGES``) imports, module by module, with
    ``lifecycle`` and ``export`` made unimportable and the copies first on the path."""
    import os
    import subprocess
    import sys

    from export import bundle

    bundle._copy_app(tmp_path)
    copied = sorted(module_name(ROOT / path.relative_to(tmp_path)) for path in tmp_path.rglob("*.py"))
    program = f"""
import importlib, importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lifecycle", "export"):
            raise ImportError(f"the exported app imported {{name}}")
sys.meta_path.insert(0, Refuse())
sys.path.insert(0, {str(tmp_path)!r})
for name in {copied!r}:
    module = importlib.import_module(name)
    assert module.__file__.startswith({str(tmp_path)!r}), (name, module.__file__)
print("imported", len({copied!r}))
"""
    env = {**os.environ, "MLFLOW_MODEL_URI": str(tmp_path / "model")}  # serving.asgi builds its app at import
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"imported {len(copied)}" in done.stdout
    assert {name.split(".")[0] for name in copied} == set(bundle.APP_PACKAGES)


def test_the_wheel_and_a_registered_model_carry_the_product_and_not_the_dev_services():
    import tomllib

    from lifecycle.integrations.packaging import CODE_DIRS

    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(name.rstrip("*") for name in included) == sorted(set(PACKAGES) - {"devservices"})
    assert sorted(Path(folder).name for folder in CODE_DIRS) == ["core", "lifecycle"]
