"""Lambda entry point of the webhooks API: the shared resolver with the webhooks routes."""

from __future__ import annotations

from functions.http import make_lambda_handler, make_resolver
from functions.webhooks.routes import router

app = make_resolver()
app.include_router(router)
lambda_handler = make_lambda_handler(app)
