"""sha256 checksums of a model folder: written by the export, verified by the server before it loads the model.

``manifest.json`` beside the weights: ``{"algorithm": "sha256", "files": {"model.safetensors": {"sha256": ...,
"bytes": ...}, ...}}``. ``verify`` checks every listed file's size, then its hash, and raises ``Mismatch`` naming the
first file that is missing, truncated or changed. A folder without a manifest is not checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
CHUNK = 1 << 20


class Mismatch(ValueError):
    """A file of the model folder is missing or differs from what was exported."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write(folder: Path) -> dict:
    """Checksum every file in ``folder`` (recursively) into its manifest; returns the manifest."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "algorithm": "sha256",
        "files": {str(p.relative_to(folder)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(folder: Path) -> bool:
    """True when ``folder`` has a manifest and every file matches it; False when it has none; Mismatch otherwise."""
    path = folder / MANIFEST
    if not path.exists():
        return False
    listed = json.loads(path.read_text())["files"]
    for name, expected in listed.items():
        file = folder / name
        if not file.is_file():
            raise Mismatch(f"{file} is missing (listed in {path})")
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise Mismatch(f"{file} has {size} bytes, {expected['bytes']} were exported: it is truncated or changed")
        if sha256(file) != expected["sha256"]:
            raise Mismatch(f"{file} does not match its sha256 in {path}: the file is corrupted or was changed")
    return True
