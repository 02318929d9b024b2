"""Tables and buckets in the template match shared.resources, with the protections the issue asks for."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import assertions

from shared import resources as res
from tests.infra.conftest import Synthesized


def _table(synthesized: Synthesized, spec: res.TableSpec) -> dict:
    name = spec.physical_name(synthesized.stack.node.try_get_context("stage"))
    found = [r for r in synthesized.of_type("AWS::DynamoDB::Table").values() if r["Properties"]["TableName"] == name]
    assert len(found) == 1, f"table {name} missing"
    return found[0]


def test_one_table_per_spec(synthesized: Synthesized) -> None:
    synthesized.template.resource_count_is("AWS::DynamoDB::Table", len(res.TABLES))


@pytest.mark.parametrize("spec", res.TABLES, ids=lambda s: s.logical_id)
def test_table_keys_indexes_and_protection(synthesized: Synthesized, spec: res.TableSpec) -> None:
    table = _table(synthesized, spec)
    props = table["Properties"]
    expected_keys = [{"AttributeName": spec.hash_key.name, "KeyType": "HASH"}]
    if spec.range_key:
        expected_keys.append({"AttributeName": spec.range_key.name, "KeyType": "RANGE"})
    assert props["KeySchema"] == expected_keys
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["DeletionProtectionEnabled"] is True  # removalPolicy "retain" (cdk.json's default)
    assert table["DeletionPolicy"] == "Retain"
    indexes = {index["IndexName"]: index for index in props.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in spec.indexes}
    for index in spec.indexes:
        schema = [{"AttributeName": index.hash_key.name, "KeyType": "HASH"}]
        if index.range_key:
            schema.append({"AttributeName": index.range_key.name, "KeyType": "RANGE"})
        assert indexes[index.name]["KeySchema"] == schema
        expected: dict[str, Any] = {"ProjectionType": index.projection}
        if index.non_key_attributes:
            expected["NonKeyAttributes"] = list(index.non_key_attributes)
        assert indexes[index.name]["Projection"] == expected
    if spec.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {"AttributeName": spec.ttl_attribute, "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props


def test_destroy_policy_drops_deletion_protection(variant: Synthesized) -> None:
    """removalPolicy "destroy" (a throwaway dev stage): tables and buckets go with the stack."""
    tables = variant.of_type("AWS::DynamoDB::Table").values()
    assert all(t["Properties"]["DeletionProtectionEnabled"] is False for t in tables)
    assert all(t["DeletionPolicy"] == "Delete" for t in tables)
    assert all(b["DeletionPolicy"] == "Delete" for b in variant.of_type("AWS::S3::Bucket").values())


def _bucket_by_id(synthesized: Synthesized, spec: res.BucketSpec) -> dict:
    bucket = synthesized.stack.data.bucket(spec)
    return synthesized.resources[synthesized.logical_id(bucket)]


@pytest.mark.parametrize("spec", res.BUCKETS, ids=lambda s: s.logical_id)
def test_bucket_protection_expiry_versioning_cors(synthesized: Synthesized, spec: res.BucketSpec) -> None:
    props = _bucket_by_id(synthesized, spec)["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": synthesized.logical_id(synthesized.stack.data.access_logs)
    }
    rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
    expirations = [rule["ExpirationInDays"] for rule in rules if "ExpirationInDays" in rule]
    assert expirations == ([spec.expire_days] if spec.expire_days else [])
    assert (props.get("VersioningConfiguration") == {"Status": "Enabled"}) is spec.versioned
    cors = props.get("CorsConfiguration", {}).get("CorsRules", [])
    assert bool(cors) is spec.cors_put
    if spec.cors_put:
        assert cors[0]["AllowedMethods"] == ["PUT"]
    # The physical name is the shared one, with the deploying account's id.
    name = props["BucketName"]
    assert f"stagehub-test-{spec.logical_id}-" in str(name)
    assert "AWS::AccountId" in str(name)


def test_every_bucket_denies_plain_http(synthesized: Synthesized) -> None:
    policies = synthesized.of_type("AWS::S3::BucketPolicy")
    secured = set()
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                secured.add(policy["Properties"]["Bucket"]["Ref"])
    expected = {synthesized.logical_id(b) for b in synthesized.stack.data.buckets.values()}
    expected.add(synthesized.logical_id(synthesized.stack.data.access_logs))
    assert expected <= secured


def test_access_logs_bucket_expires_logs(synthesized: Synthesized) -> None:
    logs = synthesized.resources[synthesized.logical_id(synthesized.stack.data.access_logs)]["Properties"]
    assert logs["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] > 0
    synthesized.template.has_resource_properties("AWS::S3::Bucket", {"LoggingConfiguration": assertions.Match.absent()})
