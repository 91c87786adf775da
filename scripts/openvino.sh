#!/usr/bin/env bash
# OpenVINO GenAI beside the project, for benchmarks/engines.py's engine-to-engine rows: a venv of its own (its
# converter, optimum-intel 2.2, requires transformers<5.6, below this project's), and the model folder exported to
# OpenVINO IR with fp16 weights, as a new user of OpenVINO would make it. About 3 minutes and 1.5 GB, once:
# `make openvino`. Not part of `make run` or `make test`.
#
#   scripts/openvino.sh MODEL_FOLDER [DIR]     # default DIR: .openvino (ignored by git)
#
# Prints the benchmark's flags at the end: --openvino-python DIR/venv/bin/python --openvino-model DIR/model
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FOLDER="$(realpath "${1:?usage: scripts/openvino.sh MODEL_FOLDER [DIR] (the converted folder: mlflow_data/models/smollm2)}")"
DIR="$(realpath -m "${2:-$ROOT/.openvino}")"
mkdir -p "$DIR"

if [ ! -x "$DIR/venv/bin/optimum-cli" ]; then
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install --quiet torch==2.13.0  # the CPU build first, as in the project's venv
  "$DIR/venv/bin/pip" install --quiet "optimum-intel[openvino]==2.2.*" "transformers<5.6" "openvino==2026.4.1" \
    "openvino-genai==2026.4.1.0" "openvino-tokenizers==2026.4.1.0"
fi
if [ ! -f "$DIR/model/openvino_model.xml" ]; then
  "$DIR/venv/bin/optimum-cli" export openvino --model "$FOLDER" --task text-generation-with-past \
    --weight-format fp16 "$DIR/model" > "$DIR/export.log" 2>&1 || { tail -20 "$DIR/export.log" >&2; exit 1; }
fi
echo "openvino: ready: --openvino-python $DIR/venv/bin/python --openvino-model $DIR/model"
