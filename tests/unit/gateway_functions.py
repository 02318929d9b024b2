"""Lambda handlers the gateway's own tests route to (run inside the gateway's instance processes)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

_in_flight = 0  # this instance's invocations now running: the gateway must never make it more than 1


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answers with the request's marker, its client address and how many invocations this instance was running."""
    global _in_flight
    _in_flight += 1
    try:
        request = json.loads(event["body"] or "{}")
        time.sleep(float(request.get("sleepS", 0)))
        answer = {
            "marker": request.get("marker"),
            "sourceIp": event["requestContext"]["identity"]["sourceIp"],
            "inFlight": _in_flight,
            "pid": os.getpid(),
            "userId": (event["requestContext"].get("authorizer") or {}).get("userId"),
            "multiValueHeaders": event["multiValueHeaders"],
            "environment": os.environ.get("GATEWAY_TEST_VALUE"),
        }
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(answer)}
    finally:
        _in_flight -= 1


def crash(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Raises, or kills its process (a crashed Lambda instance) when the body says so."""
    if json.loads(event["body"] or "{}").get("exit"):
        os._exit(1)
    raise RuntimeError("boom")


def authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Allows the token `Bearer user-<id>` as user <id>; denies anything else."""
    token = str(event["authorizationToken"])
    if not token.startswith("Bearer user-"):
        raise Exception("Unauthorized")
    user_id = token.removeprefix("Bearer user-")
    statement = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}
    return {
        "principalId": user_id,
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": {"userId": user_id},
    }
