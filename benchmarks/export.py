"""The exported bundle and its image against what `mlflow models generate-dockerfile` builds for the same model.

    python benchmarks/export.py [--data-dir mlflow_data] [--model-uri models:/langchain-e2e-model@champion]

Needs a registered model (`python main.py mode=deploy`), and for the image `make test-tools` (podman, runc, a local
base image). Measured in one run:
- this project's bundle (vendored wheels), its image size, and the container's start-to-ready time;
- MLflow's build context for the same model, and the size of what its Dockerfile installs: `pip install mlflow` plus
  the model's requirements.txt, where `torch==2.13.0` from PyPI is the CUDA build. That image cannot be built here
  (no registry). Its requirement set is resolved instead: from this environment's metadata where the same build is
  installed here, and from PyPI's simple API otherwise, reading each wheel's METADATA with HTTP range requests. The
  sizes are then summed: installed sizes where known, compressed wheel sizes otherwise. The figure is therefore a
  lower bound of MLflow's image, which also carries the Python base, nginx and the model.
Target: this image at most half of what MLflow's would install.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from devservices.ports import free_port  # noqa: E402
from export import podman  # noqa: E402 - after the project root is importable
from export.bundle import ExportSettings, folder_bytes, write  # noqa: E402

SIMPLE = "https://pypi.org/simple/{name}/"
MB = 1e6


# ---- what MLflow's Dockerfile installs ----


@lru_cache
def index(name: str) -> dict:
    request = urllib.request.Request(
        SIMPLE.format(name=name), headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def best_wheel(name: str, version: str) -> dict:
    """The wheel pip would pick here (this interpreter and platform) for name==version."""
    ranks = {tag: i for i, tag in enumerate(sys_tags())}
    candidates = []
    for file in index(name)["files"]:
        if not file["filename"].endswith(".whl") or file.get("yanked"):
            continue
        _, wheel_version, _, tags = parse_wheel_filename(file["filename"])
        rank = min((ranks[t] for t in tags if t in ranks), default=None)
        if wheel_version == Version(version) and rank is not None:
            candidates.append((rank, file))
    if not candidates:
        raise LookupError(f"no wheel of {name}=={version} for this platform on PyPI")
    return min(candidates, key=lambda c: c[0])[1]


class RangeReader(io.RawIOBase):
    """A seekable view of a remote file, read with HTTP Range requests in 256 KiB blocks (pip's fast-deps idea)."""

    BLOCK = 1 << 18

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos = url, size, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    @lru_cache(maxsize=64)  # noqa: B019 - a reader lives for one wheel
    def _block(self, index: int) -> bytes:
        start = index * self.BLOCK
        end = min(start + self.BLOCK, self.size) - 1
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def read(self, n: int = -1) -> bytes:
        end = self.size if n < 0 else min(self.size, self.pos + n)
        out = bytearray()
        while self.pos < end:
            block, offset = divmod(self.pos, self.BLOCK)
            chunk = self._block(block)[offset : offset + end - self.pos]
            out += chunk
            self.pos += len(chunk)
        return bytes(out)


def remote_requires(file: dict) -> list[str]:
    with zipfile.ZipFile(RangeReader(file["url"], file["size"])) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        text = wheel.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def local(name: str, specifier) -> metadata.Distribution | None:
    """The distribution installed here, when it is the build the image would get (same version, no local label)."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    version = Version(dist.version)
    return dist if version.local is None and specifier.contains(version, prereleases=True) else None


def pick_version(name: str, specifier) -> str:
    versions = sorted({Version(v) for v in index(name)["versions"]}, reverse=True)
    return str(next(v for v in versions if specifier.contains(v) and not v.is_prerelease))


def resolve(roots: list[str]) -> dict[str, tuple[str, int, str]]:
    """{name: (version, bytes, 'installed size' | 'wheel size')} for ``roots`` and everything they require. The
    roots' pins win over any range a dependency asks for (as they do for pip)."""
    found: dict[str, tuple[str, int, str]] = {}
    todo = [Requirement(r) for r in roots]
    pinned = {canonicalize_name(r.name): r.specifier for r in todo}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        requirement.specifier = pinned.get(name, requirement.specifier)
        dist = local(name, requirement.specifier)
        if dist:
            size = sum(f.size or 0 for f in dist.files or [])
            found[name] = (dist.version, size, "installed size")
            requires = dist.requires or []
        else:
            version = pick_version(name, requirement.specifier)
            file = best_wheel(name, version)
            found[name] = (version, file["size"], "wheel size")
            requires = remote_requires(file)
        todo += [Requirement(line) for line in requires]
    return found


# ---- this project's bundle and image ----


def run(command: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kw)


def build_and_start(bundle: Path) -> dict:
    if reason := podman.unavailable():
        return {"skipped": f"{reason}: run `make test-tools`"}
    tag = f"lifecycle-export-bench:{os.getpid()}"
    name = f"lifecycle-export-bench-{os.getpid()}"
    env = {**os.environ, **podman.script_env(tag, name)}
    port = free_port()
    try:
        started = time.perf_counter()
        built = run(["bash", str(bundle / "build.sh")], env=env)
        if built.returncode:
            return {"skipped": f"build failed: {built.stderr[-500:]}"}
        build_s = time.perf_counter() - started
        size = int(podman.podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
        started = time.perf_counter()
        run(["bash", str(bundle / "run.sh")], env={**env, "PORT": str(port)}, check=True)
        while time.perf_counter() - started < 300:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)  # polling for start-to-ready
        ready_s = time.perf_counter() - started
        checked = run(["bash", str(bundle / "test.sh")], env={**os.environ, "PORT": str(port)})
        return {"image": size, "build_s": build_s, "ready_s": ready_s, "test_sh": checked.returncode == 0}
    finally:
        podman.remove(tag, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT / "mlflow_data"))
    parser.add_argument("--model-uri", default="models:/langchain-e2e-model@champion")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(args.data_dir).resolve()}/mlflow.db"

    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        wheelhouse = ROOT / ".venv" / "wheelhouse"
        bundle = write(ExportSettings(args.model_uri, work / "bundle", vendor_wheels=True, wheelhouse=wheelhouse))
        ours = build_and_start(bundle.path)
        context = work / "mlflow-context"
        mlflow = Path(sys.executable).with_name("mlflow")
        run([str(mlflow), "models", "generate-dockerfile", "-m", args.model_uri, "-d", str(context)], check=True)
        mlflow_version = metadata.version("mlflow")
        roots = [f"mlflow=={mlflow_version}", *(context / "model_dir" / "requirements.txt").read_text().split()]
        theirs = resolve(roots)
        report(bundle, ours, context, theirs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(bundle, ours: dict, context: Path, theirs: dict) -> None:
    wheels = folder_bytes(bundle.path / "wheels")
    installs = sum(size for _, size, _ in theirs.values())
    print(f"\nexport of {bundle.spec.source_uri} (float32, vendored wheels)\n")
    print(f"{'':<58} {'MB':>8}")
    print(f"{'this bundle (build context, all)':<58} {folder_bytes(bundle.path) / MB:>8.0f}")
    print(f"{'  of which the model':<58} {bundle.model_bytes / MB:>8.0f}")
    print(f"{'  of which the wheels':<58} {wheels / MB:>8.0f}")
    if "image" in ours:
        print(f"{'this image (podman image inspect)':<58} {ours['image'] / MB:>8.0f}")
    print(f"{'mlflow models generate-dockerfile context':<58} {folder_bytes(context) / MB:>8.0f}")
    print(f"{'what its Dockerfile installs (pip, lower bound)':<58} {installs / MB:>8.0f}")
    biggest = sorted(theirs.items(), key=lambda kv: -kv[1][1])[:6]
    for name, (version, size, how) in biggest:
        print(f"{f'    {name}=={version} ({how})':<58} {size / MB:>8.0f}")
    print(f"{'  packages in it':<58} {len(theirs):>8}")
    if "--no-cache-dir" not in (context / "Dockerfile").read_text():
        print("  (its pip commands also keep their download cache in the image; not counted here)")
    if "image" in ours:
        ratio = ours["image"] / (installs + folder_bytes(context))
        verdict = "met" if ratio <= 0.5 else "NOT met"
        print(f"\nthis image / (MLflow's installs + its context): {ratio:.2f} (target <= 0.50: {verdict})")
        print(
            f"image build: {ours['build_s']:.0f} s; container start-to-ready: {ours['ready_s']:.1f} s; "
            f"test.sh {'passed' if ours['test_sh'] else 'FAILED'}"
        )
    else:
        print(f"\nimage not built: {ours['skipped']}")


if __name__ == "__main__":
    main()
