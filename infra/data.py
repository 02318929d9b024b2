"""DynamoDB tables and S3 buckets, one per entry of `shared.resources.TABLES` / `BUCKETS`.

Tables: on-demand, point-in-time recovery, TTL where the spec has one, AWS-managed encryption, deletion
protection when data is retained. Buckets: no public access, SSL only, S3-managed encryption, versioning and
expiry as the spec says, access logs to one logs bucket, CORS PUT where browsers upload.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import StagehubConfig
from shared import resources as res

ACCESS_LOG_DAYS = 90


_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}


def _attribute(key: res.KeySpec) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_ATTRIBUTE_TYPES[key.type])


class Data(Construct):
    """Every table and bucket of one stage, looked up by their `shared.resources` spec."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StagehubConfig, names: res.ResourceNames):
        super().__init__(scope, construct_id)
        removal = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY
        self.tables: dict[str, dynamodb.Table] = {
            spec.logical_id: self._table(spec, names, removal, config) for spec in res.TABLES
        }
        self.access_logs = self._access_logs_bucket(removal, config)
        self.buckets: dict[str, s3.Bucket] = {
            spec.logical_id: self._bucket(spec, names, removal, config) for spec in res.BUCKETS
        }

    def table(self, spec: res.TableSpec) -> dynamodb.Table:
        return self.tables[spec.logical_id]

    def bucket(self, spec: res.BucketSpec) -> s3.Bucket:
        return self.buckets[spec.logical_id]

    def _table(
        self, spec: res.TableSpec, names: res.ResourceNames, removal: cdk.RemovalPolicy, config: StagehubConfig
    ) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            _construct_id(spec.logical_id, "Table"),
            table_name=names.table(spec),
            partition_key=_attribute(spec.hash_key),
            sort_key=_attribute(spec.range_key) if spec.range_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=spec.ttl_attribute,
            deletion_protection=config.retain_data,
            removal_policy=removal,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_attribute(index.hash_key),
                sort_key=_attribute(index.range_key) if index.range_key else None,
                projection_type=dynamodb.ProjectionType(index.projection),
                non_key_attributes=list(index.non_key_attributes) or None,
            )
        return table

    def _access_logs_bucket(self, removal: cdk.RemovalPolicy, config: StagehubConfig) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # log delivery writes only to SSE-S3 buckets
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=cdk.Duration.days(ACCESS_LOG_DAYS))],
            removal_policy=removal,
            # A disposable stage empties its buckets on delete, so that destroy-then-deploy works.
            auto_delete_objects=not config.retain_data,
        )
        # No access logs of its own (they would log into themselves); AwsSolutions-S1 exempts a log target bucket.
        return bucket

    def _bucket(
        self, spec: res.BucketSpec, names: res.ResourceNames, removal: cdk.RemovalPolicy, config: StagehubConfig
    ) -> s3.Bucket:
        lifecycle = []
        if spec.expire_days is not None:
            lifecycle.append(
                s3.LifecycleRule(
                    id=f"expire-after-{spec.expire_days}-days",
                    expiration=cdk.Duration.days(spec.expire_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                )
            )
        if spec.versioned:
            lifecycle.append(
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(90),
                )
            )
        cors = None
        if spec.cors_put:
            cors = [
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.PUT],
                    allowed_origins=list(config.cors_allow_origins),
                    allowed_headers=["*"],
                    exposed_headers=["ETag"],
                    max_age=3000,
                )
            ]
        return s3.Bucket(
            self,
            _construct_id(spec.logical_id, "Bucket"),
            bucket_name=names.bucket(spec),
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=spec.versioned,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=lifecycle or None,
            cors=cors,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{spec.logical_id}/",
            removal_policy=removal,
            auto_delete_objects=not config.retain_data,
        )


def _construct_id(logical_id: str, kind: str) -> str:
    """ "refresh-tokens" -> "RefreshTokensTable": stable ids, so logical ids never change with the order."""
    return "".join(part.capitalize() for part in logical_id.split("-")) + kind
