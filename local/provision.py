"""Create every table, bucket and queue of `shared.resources` on a moto server, and return the environment
(the same variables the CDK app sets in AWS) that points the functions and the worker at them.

Idempotent: what exists already is kept (moto's state is per process, so a second server started in the
same process, as the tests do, sees the first one's resources)."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Sequence
from typing import Any

import boto3

from shared import resources as res

LOCAL_REGION = "us-east-1"
# moto accepts any credentials; these fixed ones keep a developer's real ones out of the local stack.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _projection(index: res.IndexSpec) -> dict[str, Any]:
    projection: dict[str, Any] = {"ProjectionType": index.projection}
    if index.non_key_attributes:
        projection["NonKeyAttributes"] = list(index.non_key_attributes)
    return projection


def _create_table(dynamodb: Any, spec: res.TableSpec, name: str) -> None:
    keys = [spec.hash_key] + ([spec.range_key] if spec.range_key else [])
    attributes = {k.name: k.type for k in keys}
    for index in spec.indexes:
        for key in (index.hash_key, index.range_key):
            if key:
                attributes[key.name] = key.type

    def key_schema(hash_key: res.KeySpec, range_key: res.KeySpec | None) -> list[dict[str, str]]:
        schema = [{"AttributeName": hash_key.name, "KeyType": "HASH"}]
        if range_key:
            schema.append({"AttributeName": range_key.name, "KeyType": "RANGE"})
        return schema

    kwargs: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in attributes.items()],
        "KeySchema": key_schema(spec.hash_key, spec.range_key),
    }
    if spec.indexes:
        kwargs["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": key_schema(index.hash_key, index.range_key),
                "Projection": _projection(index),
            }
            for index in spec.indexes
        ]
    try:
        dynamodb.create_table(**kwargs)
    except dynamodb.exceptions.ResourceInUseException:
        return  # already there: moto keeps one in-memory state per process, shared by its servers
    if spec.ttl_attribute:
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
        )


def _create_queue_pair(sqs: Any, spec: res.QueueSpec, names: res.ResourceNames) -> tuple[str, str]:
    dlq_url = sqs.create_queue(
        QueueName=names.dlq(spec), Attributes={"MessageRetentionPeriod": str(spec.dlq_retention_s)}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=names.queue(spec),
        Attributes={
            "VisibilityTimeout": str(spec.visibility_timeout_s),
            "MessageRetentionPeriod": str(spec.retention_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}),
        },
    )["QueueUrl"]
    return url, dlq_url


def _put_cors(origins: Sequence[str]) -> dict[str, Any]:
    rule = {"AllowedMethods": ["PUT"], "AllowedOrigins": list(origins), "AllowedHeaders": ["*"], "MaxAgeSeconds": 3000}
    return {"CORSRules": [{**rule, "ExposeHeaders": ["ETag"]}]}


def provision(
    endpoint_url: str,
    stage: str = res.DEFAULT_STAGE,
    jwt_secret: str | None = None,
    cors_origins: Sequence[str] = ("*",),
) -> dict[str, str]:
    """Create all resources on the moto server at `endpoint_url`; return the environment for the processes."""
    names = res.ResourceNames(stage=stage)
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=LOCAL_REGION,
    )
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    s3 = session.client("s3", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)

    env: dict[str, str] = {
        "STAGE": stage,
        "AWS_REGION": LOCAL_REGION,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        **LOCAL_CREDENTIALS,
        "JWT_SECRET": jwt_secret or secrets.token_urlsafe(48),
        # EMF metrics and X-Ray traces have nowhere to go locally.
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for table in res.TABLES:
        _create_table(dynamodb, table, names.table(table))
        env[table.env_var] = names.table(table)
    for bucket in res.BUCKETS:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            s3.create_bucket(Bucket=names.bucket(bucket))
        if bucket.cors_put:  # the web app PUTs uploads straight to presigned URLs, as in AWS (infra/data.py)
            s3.put_bucket_cors(Bucket=names.bucket(bucket), CORSConfiguration=_put_cors(cors_origins))
        env[bucket.env_var] = names.bucket(bucket)

    backend_queues: dict[str, str] = {}
    backend_dlqs: dict[str, str] = {}
    for backend in names.backends:
        backend_queues[backend], backend_dlqs[backend] = _create_queue_pair(sqs, res.in_queue_spec(backend), names)
    env[res.BACKEND_QUEUES_ENV_VAR] = json.dumps(backend_queues)
    env[res.BACKEND_DLQS_ENV_VAR] = json.dumps(backend_dlqs)
    env["IN_QUEUE_URL"] = backend_queues[res.DEFAULT_BACKEND]
    env["OUT_QUEUE_URL"], env["OUT_DLQ_URL"] = _create_queue_pair(sqs, res.OUT_QUEUE, names)
    # Webhooks: the events waiting for delivery and the ones whose retries ran out.
    env[res.WEBHOOK_QUEUE.env_var], env[str(res.WEBHOOK_QUEUE.dlq_env_var)] = _create_queue_pair(
        sqs, res.WEBHOOK_QUEUE, names
    )
    return env
