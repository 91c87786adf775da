"""The build context's files, rendered from ``export/skeleton/``. Placeholders are ``%%{name}``, so the shell
scripts keep their ``$`` as it is. An unknown placeholder fails the export instead of passing through."""

from __future__ import annotations

import re
import string
import time
from pathlib import Path

from export.requirements import TORCH_CPU_INDEX
from serving.http.settings import ENV_PREFIX, Settings

SKELETON = Path(__file__).with_name("skeleton")
FILES = {  # skeleton name -> name in the bundle
    "Dockerfile": "Dockerfile",
    "dockerignore": ".dockerignore",
    "build.sh": "build.sh",
    "run.sh": "run.sh",
    "test.sh": "test.sh",
    "README.md": "README.md",
}
NOT_SETTINGS = {"model_uri", "host", "port"}  # fixed by the image
UNUSED = "/opt/venv/lib/python3*/site-packages/torch/test /opt/venv/lib/python3*/site-packages/torch/include"
PIP = "pip install --no-cache-dir --no-compile"  # bytecode comes later, for what the server imports only
INSTALL_VENDORED = (
    "# The wheels are mounted, not copied: they never become a layer. torch's C++ tests and headers (~145 MB)\n"
    "# serve no inference server.\n"
    "RUN --mount=type=bind,source=wheels,target=/wheels \\\n"
    "    python3 -m venv /opt/venv \\\n"
    f" && {PIP} --no-index --find-links /wheels --requirement requirements.txt \\\n"
    f" && rm -rf {UNUSED}"
)
INSTALL_FROM_INDEX = (
    "# torch's C++ tests and headers (~145 MB) serve no inference server.\n"
    "RUN python3 -m venv /opt/venv \\\n"
    f" && {PIP} --extra-index-url {TORCH_CPU_INDEX} --requirement requirements.txt \\\n"
    f" && rm -rf {UNUSED}"
)


class _Template(string.Template):
    delimiter = "%%"


def image_name(spec) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", (spec.name or "model").lower()).strip("-.") or "model"
    return f"{name}:{spec.version or 'latest'}"


def settings_table() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        if name in NOT_SETTINGS:
            continue
        default = "unset" if field.default in (None, []) else field.default
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {field.description or ''} |")
    return "\n".join(rows)


def setting_names() -> str:
    return " ".join(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields if name not in NOT_SETTINGS)


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f}"


def dtype_note(dtype: str, measured: dict | None) -> str:
    if not measured:
        return (
            f"This bundle carries {dtype} weights. Exporting with `export.dtype=bfloat16` halves the model's size; "
            "that bundle's README then reports what it costs in answers and speed, measured on the exporting machine."
        )
    speed, size = measured["tokens_per_s"], measured["weights_bytes"]
    agreement = f"{measured['identical']} of {measured['questions']}"
    differing = ""
    if measured["first_difference_mean"] is not None:
        differing = f" The others match float32 for {measured['first_difference_mean']:.0f} tokens on average."
    return (
        "This bundle carries bfloat16 weights: half the size of float32. What that cost was measured when the bundle "
        f"was exported: {measured['questions']} questions, greedy, up to {measured['max_new_tokens']} new tokens, "
        f"batched through the server's own engine on the exporting machine ({measured['cpus']} CPUs).\n\n"
        "| | float32 | bfloat16 |\n|---|---|---|\n"
        f"| weights | {_mb(size['float32'])} MB | {_mb(size['bfloat16'])} MB |\n"
        f"| tokens/s (batched) | {speed['float32']} | {speed['bfloat16']} |\n"
        f"| greedy answers identical to float32 | | {agreement} |\n\n"
        f"bfloat16 changes some answers: a different token can win a close greedy choice.{differing} Speed depends on "
        "the CPU: processors without native bfloat16 arithmetic convert on the fly. Export again with "
        "`export.dtype=float32` for the exact registered model."
    )


def wheels_note(vendored: bool) -> str:
    if vendored:
        return (
            "`wheels/` holds every Python package the image installs, so `./build.sh` needs no network besides the "
            "base image. The wheels are for Linux x86_64 and CPython 3.11: the base image must match."
        )
    return (
        f"This bundle installs its packages from PyPI (torch from {TORCH_CPU_INDEX}) while the image builds. Export "
        "with `export.vendor_wheels=true` for a bundle that builds with no network besides the base image."
    )


def render_all(bundle: Path, spec, settings, image: str, measured: dict | None, model_bytes: int) -> None:
    values = {
        "model": f"{spec.name} version {spec.version}" if spec.version else str(spec.name),
        "name": spec.name or "model",
        "container": image.split(":")[0],
        "version": spec.version or "-",
        "alias": spec.alias or "-",
        "run_id": spec.run_id or "-",
        "source_uri": settings.model_uri,
        "exported_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dtype": settings.dtype,
        "model_mb": _mb(model_bytes),
        "image": image,
        "base_image": settings.base_image,
        "port": settings.port,
        "install": INSTALL_VENDORED if settings.vendor_wheels else INSTALL_FROM_INDEX,
        "settings": setting_names(),
        "settings_table": settings_table(),
        "wheels_note": wheels_note(settings.vendor_wheels),
        "dtype_note": dtype_note(settings.dtype, measured),
    }
    for source, target in FILES.items():
        path = bundle / target
        path.write_text(_Template((SKELETON / source).read_text()).substitute(values))
        if target.endswith(".sh"):
            path.chmod(0o755)
