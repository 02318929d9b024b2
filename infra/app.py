"""Builds the CDK app from context: the one stack of the configured stage, checked by cdk-nag's AwsSolutions."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import StagehubConfig
from infra.stack import StagehubStack, stack_name

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def file_context() -> dict[str, object]:
    """cdk.json's context (feature flags and defaults): the CLI passes it, a plain `App()` would not see it."""
    return dict(json.loads(CDK_JSON.read_text())["context"])


def build_app(context: dict[str, object] | None = None, outdir: str | None = None) -> tuple[cdk.App, StagehubStack]:
    """The app and its stack; `context` overrides cdk.json's (the CLI's `-c` values override both)."""
    app = cdk.App(context={**file_context(), **(context or {})}, outdir=outdir)
    config = StagehubConfig.from_context(app.node)
    # No account/region in context: an environment-agnostic template, deployable to the CLI's account and region.
    env = cdk.Environment(account=config.account, region=config.region) if config.account or config.region else None
    stack = StagehubStack(
        app,
        stack_name(config),
        config=config,
        env=env,
        description=f"stagehub {config.stage}: pipelines of neural-network stages on AWS",
        termination_protection=config.retain_data,
    )
    cdk.Tags.of(app).add("project", "stagehub")
    cdk.Tags.of(app).add("stage", config.stage)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack
