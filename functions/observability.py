"""Powertools' logger, metrics and tracer, shared by every function (HTTP and queue consumers alike).

Kept apart from `functions.http` so that the queue consumers do not import the HTTP resolver.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

LambdaHandler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

SERVICE = "stagehub"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Stagehub", service=SERVICE)
_tracer: Tracer | None = None
_tracer_lock = threading.Lock()


def get_tracer() -> Tracer:
    """The process's Tracer, built on first use rather than at import.

    Building it imports the X-Ray SDK, whose recorder creates botocore clients: about 150 ms that every cold
    start would otherwise pay while importing the handler.
    """
    global _tracer
    with _tracer_lock:
        if _tracer is None:
            _tracer = Tracer(service=SERVICE)
        return _tracer


def capture_lambda_handler(handler: LambdaHandler) -> LambdaHandler:
    """`Tracer.capture_lambda_handler(capture_response=False)`, applied on the first invocation (see `get_tracer`).

    With tracing off (`settings.tracing`: the local stack, tests, benchmarks) no Tracer is built at all: the X-Ray
    SDK's recorder would create two botocore clients on the first request for nothing.
    """
    traced: LambdaHandler | None = None

    @functools.wraps(handler)
    def invoke(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        nonlocal traced
        if traced is None:
            from shared.settings import get_settings

            tracing = get_settings().tracing
            traced = get_tracer().capture_lambda_handler(handler, capture_response=False) if tracing else handler
        return traced(event, context)

    return invoke
