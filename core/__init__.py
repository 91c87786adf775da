"""What the lifecycle, the server and the export share, with no MLflow, Hydra or LangChain at import time.

- ``core.generation``: generation settings and their limits, prompt templates, a question in the model's format.
- ``core.model_input``: questions out of every input shape a pyfunc model or /invocations accepts.
- ``core.model_folder``: loading a Hugging Face model folder (tokenizer ready for batches), ``ModelLoadError``.
- ``core.manifest``: sha256 checksums of a model folder, written by the export and verified before serving.
- ``core.artifacts``: artifacts behind ``models:/`` and ``runs:/`` URIs on local disk for as long as they are
  needed (imports MLflow when called, and only then).

``serving`` and ``export`` import ``core`` and never ``lifecycle`` (tests/test_layering.py); the exported image
carries ``core`` and ``serving`` whole.
"""

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it), which the server's /version answers
