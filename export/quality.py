"""What bf16 weights cost against float32, measured when a bf16 bundle is exported: the same questions answered
greedily through the server's own batch (``serving.engine.agreement``), once per dtype, on the exporting machine. The
result holds the answers that stay identical, where the others first differ, the batched tokens/s of each, and the
size of each."""

from __future__ import annotations

import os
from pathlib import Path

from serving.engine import agreement


def compare(spec, bf16_folder: Path, questions: list[str]) -> dict:
    reference, reference_speed = agreement.run_dtype(spec, "float32", questions)
    halved, halved_speed = agreement.run_dtype(spec, "bfloat16", questions, folder=bf16_folder)
    return {
        **agreement.compare(reference, halved),
        "max_new_tokens": agreement.greedy(spec)["max_new_tokens"],
        "tokens_per_s": {"float32": round(reference_speed, 1), "bfloat16": round(halved_speed, 1)},
        "weights_bytes": {"float32": _weights(spec.folder), "bfloat16": _weights(bf16_folder)},
        "cpus": os.cpu_count(),
    }


def _weights(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
