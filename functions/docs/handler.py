"""Lambda entry point of the docs function: `/health`, `/openapi.json` (every function's routes) and `/docs`.

Its resolver includes the routers of every API function (no handler runs here but the three below), so the
OpenAPI document describes the whole API as API Gateway serves it. The routes are added on the first
invocation, not at import: every router's schemas, Powertools' OpenAPI models and Swagger UI would more than
double the function's cold import. They are added in the order they always were, so the document is the same.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.http import make_lambda_handler, make_resolver
from functions.routes import ROUTES

TITLE = "stagehub API"
VERSION = "1.0.0"
PUBLIC_ROUTES = {(route.method, route.path) for route in ROUTES if not route.authorized}

app = make_resolver()
_resolve = make_lambda_handler(app)
_lock = threading.Lock()
_routes_added = False


@functools.cache
def _security() -> dict[str, Any]:
    """The bearer scheme, required globally (Powertools' OpenAPI models are imported here, on first use)."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return {"security_schemes": {"bearerAuth": HTTPBearer(bearerFormat="JWT")}, "security": [{"bearerAuth": []}]}


def health() -> dict[str, str]:
    return {"status": "ok"}


def openapi_document() -> Response[Any]:
    schema = json.loads(
        app.get_openapi_json_schema(title=TITLE, version=VERSION, openapi_version="3.1.0", **_security())
    )
    # The bearer requirement is global; the public routes (API.md) opt out, which Powertools cannot express.
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if (method.upper(), path) in PUBLIC_ROUTES:
                operation["security"] = []
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=schema)


def _add_routes() -> None:
    from functions.auth.routes import router as auth_router
    from functions.executions.routes import router as executions_router
    from functions.pipelines.routes import router as pipelines_router
    from functions.uploads.routes import router as uploads_router

    for router in (auth_router, pipelines_router, uploads_router, executions_router):
        app.include_router(router)
    from functions.webhooks.routes import router as webhooks_router

    app.include_router(webhooks_router)
    # Swagger UI's assets are bundled with Powertools and served by this function: no CDN needed.
    app.enable_swagger(path="/docs", title=TITLE, version=VERSION, openapi_version="3.1.0", **_security())
    app.get("/health", include_in_schema=True, summary="Liveness")(health)
    app.get("/openapi.json", include_in_schema=False)(openapi_document)


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _routes_added
    if not _routes_added:
        with _lock:
            if not _routes_added:
                _add_routes()
                _routes_added = True
    return _resolve(event, context)
