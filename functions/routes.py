"""The API's route table: which Lambda function serves which method and path, and whether it needs a token.

The CDK app builds API Gateway's resources and methods from it; the local gateway dispatches with it; the
tests check both against API.md. Paths use API Gateway's `{param}` syntax.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str  # a key of API_FUNCTIONS
    authorized: bool = True


# function name -> handler module (each exposes `lambda_handler`)
API_FUNCTIONS: dict[str, str] = {
    "auth": "functions.auth.handler",
    "pipelines": "functions.pipelines.handler",
    "uploads": "functions.uploads.handler",
    "executions": "functions.executions.handler",
    "docs": "functions.docs.handler",
}
API_FUNCTIONS["webhooks"] = "functions.webhooks.handler"  # webhook secret and delivery log
AUTHORIZER_MODULE = "functions.authorizer.handler"
# Queue consumers (not behind API Gateway).
RESULTS_CONSUMER_MODULE = "functions.results.handler"
DLQ_HANDLER_MODULE = "functions.dlq.handler"
WEBHOOK_SENDER_MODULE = "functions.webhooks.sender_handler"  # the webhook queue's consumer

# Scheduled (EventBridge): admits what a lost event left waiting, times out stale waiting executions.
SWEEP_MODULE = "functions.sweep.handler"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "docs", authorized=False),
    Route("GET", "/openapi.json", "docs", authorized=False),
    Route("GET", "/docs", "docs", authorized=False),
    Route("POST", "/auth/register", "auth", authorized=False),
    Route("POST", "/auth/login", "auth", authorized=False),
    Route("POST", "/auth/refresh", "auth", authorized=False),
    Route("POST", "/auth/logout", "auth", authorized=False),
    Route("GET", "/users/me", "auth"),
    Route("GET", "/stage-types", "pipelines"),
    Route("POST", "/pipelines", "pipelines"),
    Route("GET", "/pipelines", "pipelines"),
    Route("GET", "/users/{userId}/pipelines", "pipelines"),
    Route("GET", "/pipelines/{pipelineId}", "pipelines"),
    Route("DELETE", "/pipelines/{pipelineId}", "pipelines"),
    Route("GET", "/pipelines/{pipelineId}/rating", "pipelines"),
    Route("PUT", "/pipelines/{pipelineId}/rating", "pipelines"),
    Route("POST", "/uploads", "uploads"),
    Route("POST", "/pipelines/{pipelineId}/executions", "executions"),
    Route("GET", "/pipelines/{pipelineId}/executions", "executions"),
    Route("GET", "/executions", "executions"),
    Route("GET", "/executions/{executionId}", "executions"),
    Route("GET", "/executions/{executionId}/result", "executions"),
    Route("POST", "/executions/{executionId}/cancel", "executions"),
    Route("DELETE", "/executions/{executionId}", "executions"),
    Route("GET", "/users/me/usage", "executions"),
    Route("GET", "/backends", "executions"),
)

# Webhooks (API.md, "Events: wait, webhooks, backends").
ROUTES = (
    *ROUTES,
    Route("GET", "/users/me/webhook-secret", "webhooks"),
    Route("POST", "/users/me/webhook-secret", "webhooks"),
    Route("GET", "/executions/{executionId}/webhook-deliveries", "webhooks"),
)

# Models (API.md, "Models"): what the deployment serves, beside the stage types.
ROUTES = (*ROUTES, Route("GET", "/models", "pipelines"))
