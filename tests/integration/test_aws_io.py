"""The worker's AWS I/O process (gpu_worker.aws_io) and the execution-record reads, on the moto stack."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from gpu_worker.aws_io import AwsIoProcess, AwsIoUnavailable
from gpu_worker.cancellation import CancellationWatcher
from shared.aws import client
from shared.errors import NotFound, TransientFailure
from shared.queues import QueueClient
from shared.settings import StackSettings
from shared.storage import BlobStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def aws_io(stack_env: StackSettings) -> Iterator[AwsIoProcess]:
    exits: list[bool] = []
    process = AwsIoProcess(stack_env, on_exit=lambda: exits.append(True))
    process.exits = exits  # type: ignore[attr-defined]
    yield process
    process.close()


def test_s3_calls_round_trip_with_bodies_and_missing_keys(aws_io: AwsIoProcess, stack_env: StackSettings) -> None:
    blobs = BlobStore(aws_io.client("s3"))
    prefix = f"io-test/{uuid.uuid4().hex}/"
    blobs.put_bytes(stack_env.results_bucket, prefix + "a.bin", b"\x00\x01binary", "application/octet-stream")
    blobs.put_json(stack_env.results_bucket, prefix + "b.json", {"x": 1})

    assert blobs.get_bytes(stack_env.results_bucket, prefix + "a.bin") == b"\x00\x01binary"
    assert blobs.get_json(stack_env.results_bucket, prefix + "b.json") == {"x": 1}
    with pytest.raises(NotFound):  # the helper's NoSuchKey comes back as a ClientError with its code
        blobs.get_bytes(stack_env.results_bucket, prefix + "missing")
    assert blobs.delete_prefix(stack_env.results_bucket, prefix) == 2  # paginated in the helper
    assert blobs.head(stack_env.results_bucket, prefix + "a.bin") is None


def test_a_long_poll_does_not_hold_up_other_calls(aws_io: AwsIoProcess, stack_env: StackSettings) -> None:
    sqs = client("sqs", stack_env)
    empty = sqs.create_queue(QueueName=f"io-test-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queues = QueueClient(aws_io.client("sqs"))
    polled: list[Any] = []
    poll = threading.Thread(target=lambda: polled.append(queues.receive(empty, wait_s=5)))
    poll.start()
    try:
        queues.send(stack_env.out_queue_url, "while the long poll waits")
        assert poll.is_alive(), "the send should have returned while the long poll was still waiting"
    finally:
        poll.join(10)
    assert polled == [[]]


def test_a_dead_helper_fails_calls_as_transient_and_says_so(aws_io: AwsIoProcess, stack_env: StackSettings) -> None:
    aws_io._process.kill()
    aws_io._reader.join(10)

    assert not aws_io.alive
    assert aws_io.exits == [True]  # type: ignore[attr-defined]
    with pytest.raises(AwsIoUnavailable):
        aws_io.call("s3", "list_buckets", {})
    with pytest.raises(TransientFailure):
        BlobStore(aws_io.client("s3")).put_bytes(stack_env.results_bucket, "x", b"", "text/plain")


def test_close_stops_the_helper_even_during_a_long_poll(stack_env: StackSettings) -> None:
    process = AwsIoProcess(stack_env)
    sqs = client("sqs", stack_env)
    empty = sqs.create_queue(QueueName=f"io-test-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    poll = threading.Thread(target=lambda: _swallow(lambda: QueueClient(process.client("sqs")).receive(empty)))
    poll.start()
    process.close(timeout_s=5)
    poll.join(5)
    assert process._process.returncode is not None
    assert not poll.is_alive()


def _swallow(call: Any) -> None:
    with contextlib.suppress(TransientFailure):
        call()


@pytest.fixture(params=["botocore", "aws-io"])
def records(request: pytest.FixtureRequest, stack_env: StackSettings) -> Iterator[CancellationWatcher]:
    if request.param == "botocore":
        yield CancellationWatcher(client("dynamodb", stack_env), stack_env.executions_table)
        return
    process = AwsIoProcess(stack_env)
    yield CancellationWatcher(process.client("dynamodb"), stack_env.executions_table)
    process.close()


def _put_record(settings: StackSettings, status: str, *, cancel: bool = False, deleted_at: str | None = None) -> str:
    execution_id = f"ex-{uuid.uuid4().hex}"
    item = {"executionId": {"S": execution_id}, "status": {"S": status}, "cancelRequested": {"BOOL": cancel}}
    if deleted_at is not None:
        item["deletedAt"] = {"S": deleted_at}
    client("dynamodb", settings).put_item(TableName=settings.executions_table, Item=item)
    return execution_id


def test_records_decide_skip_and_stop_from_status_cancel_flag_and_deletion(
    records: CancellationWatcher, stack_env: StackSettings
) -> None:
    running = _put_record(stack_env, "RUNNING")
    cancel_requested = _put_record(stack_env, "RUNNING", cancel=True)
    cancelled = _put_record(stack_env, "CANCELLED")
    deleted = f"ex-{uuid.uuid4().hex}"
    assert [records.should_skip(e) for e in (running, cancelled, deleted)] == [False, True, True]

    for execution_id in (running, cancel_requested, cancelled, deleted):
        records.watch(execution_id)
    assert not any(records.should_stop(e) for e in (running, cancel_requested, cancelled, deleted))  # not read yet
    records.refresh()  # one BatchGetItem for all four
    assert [records.should_stop(e) for e in (running, cancel_requested, cancelled, deleted)] == [
        False,
        True,
        True,
        True,
    ]
    records.forget(cancelled)
    assert not records.should_stop(cancelled)


def test_a_delete_tombstone_is_treated_as_cancelled_and_seen_right_before_writing(
    records: CancellationWatcher, stack_env: StackSettings
) -> None:
    """CONTRACTS C2: `deletedAt` on the record (set by DELETE before the S3 purge) stops the execution."""
    tombstoned = _put_record(stack_env, "RUNNING", deleted_at="2026-12-01T12:00:00.000Z")
    running = _put_record(stack_env, "RUNNING")
    assert records.should_skip(tombstoned) is True
    records.watch(tombstoned)
    records.refresh()
    assert records.should_stop(tombstoned) is True
    assert (records.stop_now(tombstoned), records.stop_now(running)) == (True, False)
    client("dynamodb", stack_env).update_item(
        TableName=stack_env.executions_table,
        Key={"executionId": {"S": running}},
        UpdateExpression="SET deletedAt = :at",
        ExpressionAttributeValues={":at": {"S": "2026-12-01T12:00:01.000Z"}},
    )
    records.watch(running)
    assert records.stop_now(running) is True  # a consistent read, not the last refresh
    assert records.should_stop(running) is True


def test_records_read_more_than_one_batch_of_keys(stack_env: StackSettings) -> None:
    records = CancellationWatcher(client("dynamodb", stack_env), stack_env.executions_table)
    ids = [_put_record(stack_env, "RUNNING") for _ in range(3)] + [f"ex-gone-{n}" for n in range(120)]
    for execution_id in ids:
        records.watch(execution_id)
    records.refresh()
    assert [records.should_stop(e) for e in ids[:3]] == [False] * 3
    assert all(records.should_stop(e) for e in ids[3:])


class _FailingDynamo:
    def batch_get_item(self, **_: Any) -> Any:
        from botocore.exceptions import EndpointConnectionError

        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    def get_item(self, **kwargs: Any) -> Any:
        return self.batch_get_item(**kwargs)


def test_a_failed_refresh_keeps_the_last_answer_and_a_failed_skip_check_is_transient() -> None:
    records = CancellationWatcher(_FailingDynamo(), "table")
    records.watch("e1")
    records.refresh()
    assert records.should_stop("e1") is False
    with pytest.raises(TransientFailure):
        records.should_skip("e1")
