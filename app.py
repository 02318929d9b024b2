#!/usr/bin/env python3
"""CDK entry point (`cdk synth`, `cdk deploy`): the settings come from cdk.json's context and `-c` overrides."""

from infra.app import build_app

if __name__ == "__main__":
    app, _ = build_app()
    app.synth()
