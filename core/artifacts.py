"""Artifacts on local disk for as long as they are needed, and no longer.

MLflow downloads artifacts from a remote store (S3, a tracking server's proxy) into a fresh ``mkdtemp()`` folder
that nothing removes: every ``mlflow.pyfunc.load_model`` or ``download_artifacts`` of a model kept in S3 left a
copy of its weights (half a gigabyte here) in /tmp. ``local_artifacts`` downloads into a folder it removes on exit
instead; artifacts in a local store are used where they are, not copied.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


def scheme(uri: str) -> str:
    """``s3``, ``file``, ``mlflow-artifacts``...; a bare path is a file."""
    return uri.split(":", 1)[0] if ":" in uri else "file"


def underlying_uri(uri: str) -> str:
    """Where the artifacts behind a ``models:/`` or ``runs:/`` URI are stored (``s3://...``, a folder...)."""
    if uri.startswith("models:/"):
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        return ModelsArtifactRepository.get_underlying_uri(uri)
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        return RunsArtifactRepository.get_underlying_uri(uri)
    return uri


@contextlib.contextmanager
def local_artifacts(uri: str) -> Iterator[Path]:
    """The artifacts at ``uri`` as a local path, valid inside the ``with`` block. Files already opened or
    memory-mapped (loaded weights) stay readable after it: the kernel frees them when they are closed."""
    import mlflow

    if scheme(underlying_uri(uri)) == "file":
        yield Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))  # a local store answers in place
        return
    with tempfile.TemporaryDirectory(prefix="lifecycle-artifacts-") as folder:
        yield Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
