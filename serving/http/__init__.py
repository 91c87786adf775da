"""The HTTP side of the server (FastAPI, pydantic): the app and its routes, the request path (limits, 429/504,
streams), the contract's schemas and /docs, the scoring protocol, metrics, traces and feedback, and the settings
read from ``SERVING_*``. It reaches the model only through ``serving.engine.Batcher`` (submit, stream, describe).
"""
