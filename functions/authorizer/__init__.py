"""The Lambda authorizer that verifies access tokens for API Gateway."""
