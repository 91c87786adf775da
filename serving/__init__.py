"""HTTP serving for a registered or exported model: FastAPI app, dynamic batching, MLflow-compatible /invocations.

MLflow is imported only by ``serving.engine.loader`` for ``models:/`` and ``runs:/`` URIs: a plain model folder is
served without it.
"""
