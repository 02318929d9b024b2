"""The stagehub Python client (`stagehub_cli.client`) and the `stagehub` command line (`stagehub_cli.main`)."""

from stagehub_cli.client import ApiError, ApiUnreachable, StagehubClient
from stagehub_cli.tokens import FileTokenStore, MemoryTokenStore, Tokens

__all__ = ["ApiError", "ApiUnreachable", "FileTokenStore", "MemoryTokenStore", "StagehubClient", "Tokens"]
