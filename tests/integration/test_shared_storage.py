"""Storage, queues and provisioning against a moto server: the data-access edge translates every error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import httpx
import pytest

from local.moto import MotoServer
from local.provision import provision
from shared import resources as res
from shared.aws import client
from shared.errors import NotFound
from shared.queues import QueueClient, QueueUnavailable
from shared.settings import Settings
from shared.storage import BlobStore, S3Uri


def test_every_resource_of_the_definition_exists_with_its_indexes_and_redrive(stack_env: Settings) -> None:
    dynamodb = client("dynamodb", stack_env)
    for spec in res.TABLES:
        table = dynamodb.describe_table(TableName=getattr(stack_env, spec.env_var.lower()))["Table"]
        assert {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])} == {i.name for i in spec.indexes}
    sqs = client("sqs", stack_env)
    for url in [*stack_env.backend_queues.values(), stack_env.out_queue_url]:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith("-dlq")


def test_blob_store_round_trip_presign_and_prefix_delete(stack_env: Settings) -> None:
    store = BlobStore(client("s3", stack_env))
    bucket, prefix = stack_env.results_bucket, f"executions/{uuid.uuid4()}/"
    uri = store.put_json(bucket, f"{prefix}a.json", {"x": 1})
    assert S3Uri.parse(str(uri)) == uri
    store.put_bytes(bucket, f"{prefix}b.txt", b"hello", "text/plain")
    assert store.get_json(bucket, f"{prefix}a.json") == {"x": 1}
    url = store.presign_get(bucket, f"{prefix}b.txt", 60)
    assert httpx.get(url).content == b"hello"
    assert store.head(bucket, f"{prefix}b.txt") is not None
    assert store.delete_prefix(bucket, prefix) == 2
    assert store.head(bucket, f"{prefix}b.txt") is None
    with pytest.raises(NotFound):
        store.get_bytes(bucket, f"{prefix}a.json")
    assert httpx.get(url).status_code == 404


def test_presigned_put_uploads_with_its_content_type(stack_env: Settings) -> None:
    store = BlobStore(client("s3", stack_env))
    key = f"uploads/u/{uuid.uuid4()}"
    url = store.presign_put(stack_env.uploads_bucket, key, "text/plain", len(b"a prompt"), 60)
    assert httpx.put(url, content=b"a prompt", headers={"Content-Type": "text/plain"}).status_code == 200
    assert store.get_bytes(stack_env.uploads_bucket, key) == b"a prompt"


def test_queue_client_send_receive_delete(stack_env: Settings) -> None:
    queues = QueueClient(client("sqs", stack_env))
    sqs = client("sqs", stack_env)
    url = sqs.create_queue(QueueName=f"t-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queues.send(url, "hello")
    [message] = queues.receive(url, wait_s=1)
    assert (message.body, message.receive_count) == ("hello", 1)
    queues.change_visibility(url, message.receipt_handle, 0)
    [again] = queues.receive(url, wait_s=1)
    assert again.receive_count == 2
    queues.delete(url, again.receipt_handle)
    assert queues.receive(url, wait_s=0) == []


def test_queue_errors_become_typed_transient_errors(stack_env: Settings) -> None:
    queues = QueueClient(boto3.client("sqs", endpoint_url=stack_env.aws_endpoint_url, region_name="us-east-1"))
    with pytest.raises(QueueUnavailable):
        queues.send(f"{stack_env.aws_endpoint_url}/123456789012/no-such-queue", "x")


def test_download_prefix_copies_a_model_directory(stack_env: Settings, tmp_path: Path) -> None:
    """How the worker fetches weights named by an s3:// model source."""
    store = BlobStore(client("s3", stack_env))
    bucket, prefix = stack_env.uploads_bucket, f"models/{uuid.uuid4()}/"
    store.put_bytes(bucket, f"{prefix}model_index.json", b"{}", "application/json")
    store.put_bytes(bucket, f"{prefix}unet/weights.bin", b"\x00" * 70_000, "application/octet-stream")
    assert store.download_prefix(bucket, prefix, tmp_path / "m") == 2
    assert (tmp_path / "m" / "model_index.json").read_bytes() == b"{}"
    assert (tmp_path / "m" / "unet" / "weights.bin").stat().st_size == 70_000


def test_provisioning_twice_keeps_what_exists(moto_server: MotoServer, stack_environment: dict[str, str]) -> None:
    """A second local stack in the same process (the e2e test, then these) shares moto's state."""
    again = provision(moto_server.endpoint_url)
    assert {name: again[name] for name in again if name.endswith(("_TABLE", "_BUCKET", "QUEUE_URL"))} == {
        name: stack_environment[name] for name in again if name.endswith(("_TABLE", "_BUCKET", "QUEUE_URL"))
    }
