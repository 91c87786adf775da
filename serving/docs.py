"""Swagger UI at /docs with no internet: its script, style and icon come from this server, out of the pinned
``fastapi-swagger`` package (Swagger UI's own distribution files, released with each Swagger UI version), not from a
public CDN, so the page renders on an air-gapped host and in the exported container. /redoc is not offered: ReDoc
would need a CDN or another vendored bundle, and /docs already shows and tries every operation."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

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
