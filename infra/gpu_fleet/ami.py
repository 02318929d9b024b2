"""`python -m infra.gpu_fleet.ami --region eu-west-1 [--region ...] [--write]`: the current Deep Learning AMI
for the torch the tests run (versions.py), per region; with --write, pinned in cdk.json's `gpuAmiIds`.

Needs AWS credentials (it reads AWS's public SSM parameter and describes the image). The same by hand:

    aws ssm get-parameter --region eu-west-1 --name <versions.DLAMI_SSM_PARAMETER> --query Parameter.Value
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from infra.app import CDK_JSON
from infra.gpu_fleet.versions import DLAMI_SSM_PARAMETER


def resolve(region: str, session: Any = None) -> dict[str, str]:
    """The AMI id behind the DLAMI family's parameter in `region`, with its name and creation date."""
    import boto3

    session = session or boto3.session.Session()
    ami_id = session.client("ssm", region_name=region).get_parameter(Name=DLAMI_SSM_PARAMETER)["Parameter"]["Value"]
    (image,) = session.client("ec2", region_name=region).describe_images(ImageIds=[ami_id])["Images"]
    return {"region": region, "id": ami_id, "name": image["Name"], "created": image["CreationDate"]}


def pin(amis: dict[str, str]) -> None:
    """Write region -> id into cdk.json's context, keeping every other key as it is."""
    document = json.loads(CDK_JSON.read_text())
    document["context"]["gpuAmiIds"] = {**document["context"].get("gpuAmiIds", {}), **amis}
    CDK_JSON.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.gpu_fleet.ami", description=__doc__.splitlines()[0])
    parser.add_argument("--region", action="append", required=True)
    parser.add_argument("--write", action="store_true", help="pin the ids in cdk.json (gpuAmiIds)")
    args = parser.parse_args(argv)
    found = [resolve(region) for region in args.region]
    for image in found:
        print(f"{image['region']}: {image['id']}  {image['name']}  ({image['created']})")
    if args.write:
        pin({image["region"]: image["id"] for image in found})
    return 0


if __name__ == "__main__":
    sys.exit(main())
