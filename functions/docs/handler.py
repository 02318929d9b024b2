"""Lambda entry point of the docs function: `/health`, `/openapi.json` (every function's routes) and `/docs`.

Its resolver includes the routers of every API function (no handler runs here but the three below), so the
OpenAPI document describes the whole API as API Gateway serves it.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from functions.auth.routes import router as auth_router
from functions.executions.routes import router as executions_router
from functions.http import make_lambda_handler, make_resolver
from functions.pipelines.routes import router as pipelines_router
from functions.routes import ROUTES
from functions.uploads.routes import router as uploads_router

TITLE = "stagehub API"
VERSION = "1.0.0"
PUBLIC_ROUTES = {(route.method, route.path) for route in ROUTES if not route.authorized}
SECURITY = {"security_schemes": {"bearerAuth": HTTPBearer(bearerFormat="JWT")}, "security": [{"bearerAuth": []}]}

app = make_resolver()
for _router in (auth_router, pipelines_router, uploads_router, executions_router):
    app.include_router(_router)
# Swagger UI's assets are bundled with Powertools and served by this function: no CDN needed.
app.enable_swagger(path="/docs", title=TITLE, version=VERSION, openapi_version="3.1.0", **SECURITY)


@app.get("/health", include_in_schema=True, summary="Liveness")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[Any]:
    schema = json.loads(app.get_openapi_json_schema(title=TITLE, version=VERSION, openapi_version="3.1.0", **SECURITY))
    # The bearer requirement is global; the public routes (API.md) opt out, which Powertools cannot express.
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if (method.upper(), path) in PUBLIC_ROUTES:
                operation["security"] = []
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=schema)


lambda_handler = make_lambda_handler(app)
