"""export: a standalone build context for the registered model (export.bundle), tracked as a run.

The run records what was exported where: the model URI, dtype and sizes as params and metrics, and the bundle's
README, requirements and checksum manifest as artifacts (not the weights: they are already in the registry).
"""

from __future__ import annotations

from pathlib import Path

from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import aliased_version, champion_alias, model_uri


class ExportStage(Stage):
    name = "export"

    def preflight(self) -> None:
        from export.bundle import ExportError, check_output_dir

        try:
            check_output_dir(Path(self.cfg.export.output_dir))
        except ExportError as exc:
            raise StageError(str(exc)) from None

    def run(self, context: StageContext) -> StageResult:
        from core.model_folder import ModelLoadError
        from export.bundle import ExportError, ExportSettings, write
        from lifecycle.integrations import runs

        cfg = self.cfg
        if cfg.export.model_uri == model_uri(cfg, champion_alias(cfg)):
            aliased_version(cfg, champion_alias(cfg))  # the champion exists, or an error that says how to get one
        settings = ExportSettings(
            model_uri=cfg.export.model_uri,
            output_dir=Path(cfg.export.output_dir),
            dtype=cfg.export.dtype.value,
            vendor_wheels=cfg.export.vendor_wheels,
            wheelhouse=Path(cfg.export.wheelhouse),
            base_image=cfg.export.base_image,
            port=cfg.export.port,
            questions=[q.question for q in cfg.eval.questions],
        )
        try:
            bundle = write(settings)
        except (ExportError, ModelLoadError) as exc:
            raise StageError(str(exc)) from None
        runs.log_params({"export.model_uri": settings.model_uri, "export.dtype": settings.dtype})
        for name in ("README.md", "requirements.txt", "model/manifest.json", "model/serving.json"):
            runs.log_artifact(str(bundle.path / name), f"export/{Path(name).parent}".rstrip("/."))
        metrics = {"export.model_mb": bundle.model_bytes / 1e6, "export.bundle_mb": bundle.total_bytes / 1e6}
        sizes = f"model {metrics['export.model_mb']:.0f} MB, bundle {metrics['export.bundle_mb']:.0f} MB"
        return StageResult(
            stage=self.name,
            metrics=metrics,
            outputs={"bundle": str(bundle.path), "image": bundle.image},
            lines=[
                f"exported {settings.model_uri} ({settings.dtype}) to {bundle.path}: {sizes}, image {bundle.image}",
                f"on a machine with Docker: cd {bundle.path} && ./build.sh && ./run.sh && ./test.sh",
            ],
        )
