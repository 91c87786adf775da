"""The project installs as a package: its wheel carries the product and its config groups (not the dev services,
tests or benchmarks), and the `genai-lifecycle` command it installs works from an empty folder, a `conf/` there adding
the user's own options.

The wheel is built from a copy of the tracked files (as a clone holds them), without network (`pip wheel --no-deps
--no-build-isolation`), and installed with `--no-deps --no-index` into a fresh virtual environment, whose
dependencies are this environment's (a .pth file names its site-packages, which holds no copy of the project: it is
installed in editable mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "genai-lifecycle"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, source = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source") / "project"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, tracked.split("\0")):  # what a clone holds: no build/ left over from before
        if (ROOT / name).exists() or (ROOT / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name, follow_symlinks=False)
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(source),
    ]
    done = subprocess.run(build, capture_output=True, text=True, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = out.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; its bin folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)]
    done = subprocess.run(pip, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir / "bin"


def run(bin_dir: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run([COMMAND, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_carries_the_product_and_its_config_groups_only(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"core", "lifecycle", "serving", "export"}, top
    shipped = {name.removeprefix("lifecycle/conf/") for name in names if name.startswith("lifecycle/conf/")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert "export/skeleton/Dockerfile" in names


def test_the_command_runs_from_an_empty_folder(installed: Path, tmp_path):
    where = run(installed, tmp_path, "--help")
    assert where.returncode == 0, where.stderr
    assert "mode: all, deploy, experiment, export, monitor" in where.stdout, where.stdout
    shown = run(installed, tmp_path, "mode=server-config")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"--backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow_data/mlflow.db" in shown.stdout, shown.stdout
    assert "  genai-lifecycle tracking_uri=http://127.0.0.1:5050" in shown.stdout  # the hints name what ran
    assert "python main.py" not in shown.stdout, shown.stdout
    origin = subprocess.run(
        [str(installed / "python"), "-c", "import lifecycle; print(lifecycle.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert origin.startswith(str(installed.parent)), origin  # the installed copy, not the checkout


def test_a_conf_folder_where_it_runs_adds_the_users_own_options(installed: Path, tmp_path):
    prompts = tmp_path / "conf" / "prompt"
    prompts.mkdir(parents=True)
    (prompts / "pirate.yaml").write_text(
        "name: qa-pirate\ndescription: Answers like a pirate.\nsystem: Answer as a pirate would.\n"
        'template: "{{question}}"\n'
    )
    listed = run(installed, tmp_path, "--help")
    assert "prompt: concise, detailed, pirate, step_by_step" in listed.stdout, listed.stdout
    composed = run(installed, tmp_path, "prompt=pirate", "--cfg", "job")
    assert composed.returncode == 0, composed.stderr
    assert "name: qa-pirate" in composed.stdout and "system: Answer as a pirate would." in composed.stdout
