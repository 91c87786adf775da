"""The server's routes, one router per area: ``ask`` (/ask, /ask/batch, /ask/stream), ``invocations``
(/invocations, MLflow's scoring protocol), ``v1`` (/v1/models, /v1/chat/completions, OpenAI-compatible) and
``operations`` (/health, /model/info, /metrics) and, with traces on, ``feedback`` (/v1/feedback). Each only adapts
HTTP to ``serving.http.requests``."""
