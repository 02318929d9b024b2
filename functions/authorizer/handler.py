"""API Gateway TOKEN authorizer: verifies the Bearer access token, allows the whole API for its user.

The policy covers every method of the stage (`.../<stage>/*/*`), so API Gateway may cache it by token. Any
failure raises "Unauthorized", which API Gateway answers with 401 (its UNAUTHORIZED gateway response).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.auth.tokens import bearer_token, verify_access_token
from shared.errors import Unauthorized
from shared.settings import get_settings

logger = Logger(service="stagehub")


def _stage_wide(method_arn: str) -> str:
    """arn:...:api-id/stage/METHOD/path -> arn:...:api-id/stage/*/*"""
    arn_prefix, _, path = method_arn.partition(":execute-api:")
    parts = path.split("/")
    return f"{arn_prefix}:execute-api:{parts[0]}/{parts[1]}/*/*" if len(parts) >= 2 else method_arn


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        user_id = verify_access_token(bearer_token(event.get("authorizationToken")), get_settings())
    except Unauthorized as exc:
        logger.info("token rejected", extra={"reason": exc.message})
        raise Exception("Unauthorized") from None
    return {
        "principalId": user_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": _stage_wide(event["methodArn"])}
            ],
        },
        "context": {"userId": user_id},
    }
