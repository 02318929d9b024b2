"""`python -m infra.gpu_fleet.ami`: the DLAMI of the tests' torch per region, pinned into cdk.json's context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from infra.gpu_fleet import ami
from infra.gpu_fleet.versions import DLAMI_SSM_PARAMETER

AMI_ID = "ami-0abcdef0123456789"


class StubbedSession:
    """boto3's session, its SSM and EC2 clients answering with what AWS would."""

    def __init__(self) -> None:
        self.stubs: list[Stubber] = []

    def client(self, service: str, region_name: str) -> Any:
        client = boto3.client(service, region_name=region_name)
        stub = Stubber(client)
        if service == "ssm":
            stub.add_response(
                "get_parameter",
                {"Parameter": {"Name": DLAMI_SSM_PARAMETER, "Value": AMI_ID}},
                {"Name": DLAMI_SSM_PARAMETER},
            )
        else:
            stub.add_response(
                "describe_images",
                {"Images": [{"ImageId": AMI_ID, "Name": "Deep Learning OSS ... PyTorch 2.13", "CreationDate": "x"}]},
                {"ImageIds": [AMI_ID]},
            )
        stub.activate()
        self.stubs.append(stub)
        return client


def test_resolve_reads_the_family_parameter_and_describes_the_image() -> None:
    session = StubbedSession()
    image = ami.resolve("eu-west-1", session)
    assert (image["region"], image["id"]) == ("eu-west-1", AMI_ID)
    for stub in session.stubs:
        stub.assert_no_pending_responses()


def test_pin_writes_the_ids_into_the_context_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"app": "x", "context": {"stage": "dev", "gpuAmiIds": {"us-east-1": "ami-1"}}}))
    monkeypatch.setattr(ami, "CDK_JSON", cdk_json)
    ami.pin({"eu-west-1": AMI_ID})
    context = json.loads(cdk_json.read_text())["context"]
    assert context == {"stage": "dev", "gpuAmiIds": {"us-east-1": "ami-1", "eu-west-1": AMI_ID}}
