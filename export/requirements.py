"""The exported server's requirements: what ``serving`` imports at run time, pinned to the versions installed here,
with everything they need, and nothing else: no MLflow, no boto3, no LangChain, no Hydra.

The closure is read from the installed distributions' metadata (``Requires-Dist`` without extras, markers evaluated
for this interpreter), so the pins are exactly the versions the test suite ran against. torch keeps its local
version label (``2.13.0+cpu``): the CPU build, from the PyTorch CPU index or a vendored wheel, never the CUDA one.

    python -m export.requirements                  # print them
    python -m export.requirements --download DIR   # fill a wheelhouse with them (what `make test` does)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

RUNTIME = (
    "torch", "transformers", "fastapi", "fastapi-swagger", "uvicorn", "pydantic", "pyyaml", "safetensors", "llguidance",
    "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",  # the server's traces (serving.http.tracing)
)  # fmt: skip
NEVER = frozenset({"mlflow", "mlflow-skinny", "mlflow-tracing", "boto3", "botocore", "langchain-core", "hydra-core"})
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _requires(dist: metadata.Distribution) -> list[str]:
    names = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra or another platform's dependency
        names.append(canonicalize_name(requirement.name))
    return names


def closure(roots: tuple[str, ...] = RUNTIME) -> dict[str, str]:
    """{distribution name: installed version} for ``roots`` and everything they require, transitively."""
    pins: dict[str, str] = {}
    todo = [canonicalize_name(name) for name in roots]
    while todo:
        name = todo.pop()
        if name in pins:
            continue
        dist = metadata.distribution(name)
        pins[name] = dist.version
        todo += _requires(dist)
    leaked = NEVER & pins.keys()
    if leaked:
        raise RuntimeError(f"the server's requirements would pull in {sorted(leaked)}; it must run without them")
    return dict(sorted(pins.items()))


def read(path) -> dict[str, str]:
    """{name: version} from a requirements file of exact pins."""
    pairs = (line.split("==", 1) for line in Path(path).read_text().split() if "==" in line)
    return {canonicalize_name(name): version for name, version in pairs}


def wheel_pin(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel file."""
    name, version, _, _ = parse_wheel_filename(filename)
    return canonicalize_name(name), str(version)


def lines(pins: dict[str, str] | None = None) -> list[str]:
    pins = closure() if pins is None else pins
    return [f"{name}=={version}" for name, version in pins.items()]


def download(dest: str, requirements_file: str, wheelhouse: str | None = None) -> None:
    """Wheels for the requirements into ``dest``, trying in turn: ``wheelhouse`` alone (no network), pip's configured
    indexes, then those plus the PyTorch CPU index (where the ``+cpu`` torch lives when no local index has it)."""
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--retries", "1"]
    base += ["--dest", dest, "--requirement", requirements_file]
    attempts = [["--no-index", "--find-links", wheelhouse]] if wheelhouse else []
    attempts += [[], ["--extra-index-url", TORCH_CPU_INDEX]]
    for extra in attempts[:-1]:
        if subprocess.run([*base, *extra], capture_output=True, text=True).returncode == 0:
            return
    subprocess.run([*base, *attempts[-1]], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.requirements", description=__doc__)
    parser.add_argument("--download", metavar="DIR", help="download the wheels into DIR (a wheelhouse)")
    args = parser.parse_args(argv)
    pinned = lines()
    if not args.download:
        print("\n".join(pinned))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        requirements_file = Path(tmp) / "requirements.txt"
        requirements_file.write_text("\n".join(pinned) + "\n")
        download(args.download, str(requirements_file), wheelhouse=args.download)


if __name__ == "__main__":
    main()
