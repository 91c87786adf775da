"""How this project's container scenario and export benchmark build and run a bundle where no Docker engine runs:
podman with runc, on a Python base image built locally (no image registry can be reached from these machines).
``scripts/container-tools.sh`` (run by ``make test-tools``) installs the tools and builds ``BASE_IMAGE``.

The bundle's own ``build.sh`` and ``run.sh`` do the work; ``script_env`` gives them the engine and its flags.
"""

from __future__ import annotations

import shutil
import subprocess

BASE_IMAGE = "localhost/lifecycle-python:bookworm"  # the default of scripts/container-tools.sh
ENGINE = ("podman", "--runtime", "runc")  # crun fails on these machines' cgroups
BUILD_FLAGS = "--isolation chroot --format docker"  # no user namespaces here; HEALTHCHECK needs the docker format
RUN_FLAGS = "--ulimit nofile=20000:20000 --ulimit nproc=4096:4096"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*ENGINE, *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why a bundle cannot be built here (a tool or the base image is missing), or None when it can."""
    missing = [tool for tool in ("podman", "runc") if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} missing"
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        return f"no base image {BASE_IMAGE}"
    return None


def script_env(image: str, name: str) -> dict[str, str]:
    """What build.sh and run.sh read to build ``image`` and run it as container ``name`` with podman."""
    return {
        "CONTAINER_ENGINE": " ".join(ENGINE),
        "BASE_IMAGE": BASE_IMAGE,
        "BUILD_FLAGS": BUILD_FLAGS,
        "RUN_FLAGS": RUN_FLAGS,
        "IMAGE": image,
        "NAME": name,
    }


def remove(image: str, name: str) -> None:
    """The container and its image, if they exist."""
    podman("rm", "--force", name, check=False)
    podman("rmi", "--force", image, check=False)
