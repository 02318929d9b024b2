"""The CDK app synthesized once per session (cdk-nag included), and the template to assert on.

No network, Docker, AWS credentials or layer build: `skipLayerBuild` puts an empty dependency layer in place
of pip's. A second, variant app (an account and region, data destroyed with the stack, warm pool, S3 model
source, maxReceiveCount override, alarm e-mail) is synthesized only by the tests that ask for it.

cdk-nag 3 is a CDK validation plugin: its findings go to the cloud assembly's `validation-report.json` (the
file `cdk synth` reads to fail). The tests synthesize with `failSynthOnValidationErrors` off, so that a finding
fails test_nag.py with its rule and construct path instead of failing every test's fixture, and the base app
carries a canary stack with one deliberate finding, which proves the plugin ran on the app `build_app` made.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import assertions
from aws_cdk import aws_s3 as s3

from infra.app import build_app
from infra.stack import StagehubStack

BASE_CONTEXT: dict[str, object] = {
    "skipLayerBuild": True,
    # Report validation (cdk-nag) findings in validation-report.json instead of raising from synth.
    "@aws-cdk/core:failSynthOnValidationErrors": False,
    "stage": "test",
    "models": {
        "tiny-sd": {"kind": "diffusers", "source": "/opt/models/tiny-sd"},
        "tiny-lm": {"kind": "causal-lm", "source": "/opt/models/tiny-lm"},
    },
    "defaultModels": {"txt2img": "tiny-sd", "txt2txt": "tiny-lm"},
}
VARIANT_CONTEXT: dict[str, object] = {
    **BASE_CONTEXT,
    "stage": "sandbox",
    # An account and region make ARNs literal (the cdk-nag acknowledgments must still match); the region's zones
    # are given as `cdk.context.json` would cache them, so no lookup (and no credentials) is needed.
    "account": "123456789012",
    "region": "eu-west-1",
    "availability-zones:account=123456789012:region=eu-west-1": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
    "removalPolicy": "destroy",
    "warmPool": True,
    "maxReceiveCount": 7,
    "alarmEmail": "ops@example.com",
    "minGpuInstances": 1,
    "maxGpuInstances": 6,
    "gpuPerformanceProfile": "plain",
    "gpuWarmUpSizes": ["768x768"],
    "models": {
        "big-sd": {
            "kind": "diffusers",
            "source": "s3://stagehub-model-weights/big-sd/",
            "loras": {"ink-style": "s3://stagehub-model-weights/loras/ink-style/"},
        }
    },
    "defaultModels": {"txt2img": "big-sd"},
    # The fleet's other network and a pinned AMI (infra/network.py, infra/gpu_fleet/group.py).
    "workerSubnets": "private",
    "gpuAmiIds": {"eu-west-1": "ami-0123456789abcdef0"},
    "scaleInIdleMinutes": 3,
    "webAcl": False,
}


NAG_CANARY_STACK = "NagCanary"
NAG_CANARY_BUCKET = "UnloggedBucket"  # no server access logs: AwsSolutions-S1, on purpose


@dataclass
class Synthesized:
    stack: StagehubStack
    template: assertions.Template
    seconds: float
    outdir: Path

    @property
    def validation_findings(self) -> list[tuple[str, str]]:
        """(rule, construct path) of every finding in the synth's validation report (cdk-nag's included)."""
        report = json.loads((self.outdir / "validation-report.json").read_text())
        return [
            (violation["ruleName"], construct["constructPath"])
            for plugin in report["pluginReports"]
            for violation in plugin["violations"]
            for construct in violation["violatingConstructs"]
        ]

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template.to_json()["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {key: value for key, value in self.resources.items() if value["Type"] == resource_type}

    def logical_id(self, construct: Any) -> str:
        element = construct.node.default_child if construct.node.default_child is not None else construct
        return self.stack.resolve(element.logical_id)


def synthesize(context: dict[str, object], outdir: Path, nag_canary: bool = False) -> Synthesized:
    started = time.monotonic()
    app, stack = build_app(context, outdir=str(outdir))
    if nag_canary:
        s3.Bucket(cdk.Stack(app, NAG_CANARY_STACK), NAG_CANARY_BUCKET, enforce_ssl=True)
    assembly = app.synth()
    seconds = time.monotonic() - started
    template = assertions.Template.from_json(assembly.get_stack_by_name(stack.stack_name).template)
    return Synthesized(stack=stack, template=template, seconds=seconds, outdir=outdir)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(BASE_CONTEXT, tmp_path_factory.mktemp("cdk-out"), nag_canary=True)


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(VARIANT_CONTEXT, tmp_path_factory.mktemp("cdk-out-variant"))
