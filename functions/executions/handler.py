"""Lambda entry point of the executions API: the shared resolver with the executions routes."""

from __future__ import annotations

from functions.executions.routes import router
from functions.http import make_lambda_handler, make_resolver

app = make_resolver()
app.include_router(router)
lambda_handler = make_lambda_handler(app)
