"""Swagger UI at /docs with no internet: its script, style and icon come from this server, out of the pinned
``fastapi-swagger`` package (Swagger UI's own distribution files, released with each Swagger UI version), not from a
public CDN, so the page renders on an air-gapped host and in the exported container. /redoc is not offered: ReDoc
would need a CDN or another vendored bundle, and /docs already shows and tries every operation.

``state_token_limit`` writes the token limit into the description of every operation whose body becomes a prompt,
where a reader of /docs looks first: the limit is the model's (or the server's lower one), known once it has loaded,
so /openapi.json is made again once then."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from serving.http.schemas import PROMPTED, token_limit_text

ASSETS = "/docs/assets"
ASSET_PACKAGE = ("fastapi_swagger", "resources")
UI_PARAMETERS = {"tryItOutEnabled": True, "displayRequestDuration": True, "filter": True}


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and its assets under /docs/assets; the app must be created with docs_url=None."""
    app.mount(ASSETS, StaticFiles(packages=[ASSET_PACKAGE]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters=UI_PARAMETERS,
        )


TokenLimit = tuple[int | None, int | None, int]  # (max input tokens, the model's context, max_new_tokens cap)


def state_token_limit(app: FastAPI, limit: Callable[[], TokenLimit]) -> None:
    """/openapi.json states ``limit()`` in the description of every operation in ``PROMPTED``: a document per limit
    (one before the model has loaded, one after), each made once."""
    made: dict[TokenLimit, dict] = {}
    generate = app.openapi

    def openapi() -> dict:
        known = limit()
        if known not in made:
            app.openapi_schema = None  # FastAPI's cache: generate afresh, then keep it here
            document = generate()
            text = token_limit_text(*known)
            for path in PROMPTED:
                operation = document["paths"][path]["post"]
                operation["description"] = "\n\n".join(filter(None, [operation.get("description"), text]))
            made[known] = document
        return made[known]

    app.openapi = openapi
