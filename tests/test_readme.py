"""The README's structure tree names every module of the project's packages, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "lifecycle", "serving", "export", "devservices", "benchmarks", "features", "tests", "conf", "docs")


def structure_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Structure") :]
    return section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]


def test_every_module_is_in_the_structure_tree():
    named = set(re.findall(r"[\w./-]+\.py\b", structure_block()))
    names = {Path(n).name for n in named}
    missing = [
        str(path.relative_to(ROOT))
        for package in ("core", "lifecycle", "serving", "export", "devservices", "benchmarks")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
        and "skeleton" not in path.parts
        and path.name not in names
        and path.parent.name not in ("stages", "sweeps", "routes")
    ]
    assert not missing, f"not in README.md's structure tree: {missing}"


def test_the_structure_tree_names_nothing_that_is_gone():
    existing = {path.name for path in ROOT.rglob("*.py") if ".venv" not in path.parts}
    gone = sorted(
        Path(n).name for n in re.findall(r"[\w./-]+\.py\b", structure_block()) if Path(n).name not in existing
    )
    assert not gone, f"README.md's structure tree names files that do not exist: {gone}"


def test_the_packages_in_the_tree_exist():
    tree = structure_block()
    for package in PACKAGES:
        assert f"\n{package}/" in tree or tree.startswith(f"{package}/"), package
        assert (ROOT / package).is_dir()
