"""The GPU worker on the moto stack with the tiny models: real queues, S3, DynamoDB, diffusers and transformers.

Executions are submitted through the executions Lambda handler onto queues private to each test; the
out-queue and DLQ consumers (the same Lambda handlers, fed SQS events) bring the worker's events back into the
execution records, as in AWS.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from gpu_worker import compute as compute_module
from gpu_worker import endings as endings_module
from gpu_worker.aws_io import AwsIoProcess
from gpu_worker.seams import WorkerIo
from gpu_worker.tiny_models import local_models_env
from gpu_worker.worker import Worker
from local.consumers import QueueConsumers
from shared.aws import client
from shared.errors import TransientFailure
from shared.messages import ExecutionStatus
from shared.models import ExecutionRecord
from shared.settings import StackSettings, get_worker_settings
from shared.stages import execution_prefix
from tests.integration.executions_support import call_api, make_pipeline, new_id, private_queues, submit

pytestmark = pytest.mark.timeout(240)

SHORT_VISIBILITY_S = 4  # the worker's heartbeat keeps held messages invisible; a dead worker's come back fast
FINAL = {s.value for s in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(
    stack_env: StackSettings, monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path, request: pytest.FixtureRequest
) -> StackSettings:
    """Private queues (short visibility), the tiny models, and a worker that answers quickly."""
    for name, value in local_models_env(tiny_models_dir).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POLL_WAIT_S", "1")
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("PROGRESS_INTERVAL_S", "0")
    return private_queues(stack_env, monkeypatch, in_visibility_s=SHORT_VISIBILITY_S)


@pytest.fixture
def consumers(env: StackSettings) -> Iterator[QueueConsumers]:
    running = QueueConsumers(env, wait_s=1).start()
    yield running
    running.stop()


class RunningWorker:
    """A Worker in a thread of this process (the compute loop, with its intake, upload and event threads)."""

    def __init__(self, settings: StackSettings, *, aws_io: bool = False, **options: Any) -> None:
        """`aws_io`: make the AWS calls through the I/O process, as gpu_worker.process does."""
        self.aws_io = AwsIoProcess(settings) if aws_io else None
        self.fatal: list[str] = []
        self.worker = Worker(
            settings,
            WorkerIo.build(settings, self.aws_io),
            visibility_s=SHORT_VISIBILITY_S,
            on_fatal=self.fatal.append,  # never os._exit inside pytest
            **options,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop, 10.0), daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        if self.aws_io is not None:
            self.aws_io.close()
        assert not self.fatal, self.fatal


def record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord.get(execution_id, consistent_read=True)


def wait_for(condition: Callable[[], Any], timeout_s: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_final(execution_id: str, timeout_s: float = 120.0) -> ExecutionRecord:
    return wait_for(lambda: (r := record(execution_id)).status in FINAL and r, timeout_s, f"{execution_id} to finish")  # type: ignore[no-any-return]


def result_objects(settings: StackSettings, execution_id: str) -> set[str]:
    listed = client("s3", settings).list_objects_v2(
        Bucket=settings.results_bucket, Prefix=execution_prefix(execution_id)
    )
    return {item["Key"].removeprefix(execution_prefix(execution_id)) for item in listed.get("Contents", [])}


def queue_depth(settings: StackSettings, url: str) -> int:
    attributes = client("sqs", settings).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def start(pipeline_id: str, user: str, variables: dict[str, str] | None = None) -> str:
    status, body = submit(pipeline_id, user, {"variables": variables or {}})
    assert status == 202, body
    return str(body["executionId"])


TXT2IMG = [{"type": "txt2img", "inline": True, "body": "a fox", "parameters": {"steps": 2, "width": 64, "height": 64}}]
CHAIN = [
    {"type": "txt2txt", "inline": True, "body": "describe {{subject}}", "parameters": {"maxNewTokens": 8}},
    {"type": "txt2img", "inline": True, "body": "{{previous}}", "parameters": {"steps": 2, "width": 64, "height": 96}},
    {"type": "img2img", "inline": True, "body": "oil painting", "parameters": {"steps": 4, "strength": 0.5}},
]


def test_a_three_stage_chain_runs_end_to_end(env: StackSettings, consumers: QueueConsumers) -> None:
    user = new_id()
    execution_id = start(make_pipeline(env, CHAIN), user, {"subject": "a fox"})
    with RunningWorker(env, aws_io=True):  # as in production: AWS calls made by the I/O process
        done = wait_final(execution_id)
    assert done.status == "SUCCEEDED", done.error
    assert done.progress["percent"] == 100
    assert done.progress["stage"] == 3
    assert done.started_at
    assert done.finished_at

    status, result = call_api("GET", f"/executions/{execution_id}/result", user)
    assert status == 200, result
    outputs = result["outputs"]
    assert [(o["stage"], o["type"]) for o in outputs] == [(0, "text"), (1, "image"), (2, "image")]
    assert outputs[0]["text"].strip()
    for output in outputs[1:]:
        png = httpx.get(output["url"], timeout=10).content
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (64, 96))
    assert result_objects(env, execution_id) == {"request.json", "result.json", "stage-1-0.png", "stage-2-0.png"}
    assert queue_depth(env, env.in_queue_url) == 0


def test_an_execution_cancelled_while_queued_never_starts(env: StackSettings, consumers: QueueConsumers) -> None:
    user = new_id()
    execution_id = start(make_pipeline(env, TXT2IMG), user)
    status, body = call_api("POST", f"/executions/{execution_id}/cancel", user)
    assert (status, body["status"]) == (202, "CANCELLED")
    with RunningWorker(env):
        wait_for(lambda: queue_depth(env, env.in_queue_url) == 0, 30, "the worker to drop the message")
        time.sleep(1.5)  # any stray event would have been consumed by now
    cancelled = record(execution_id)
    assert (cancelled.status, cancelled.started_at) == ("CANCELLED", None)
    assert result_objects(env, execution_id) <= {"request.json"}


def test_cancelling_a_running_execution_stops_it_and_keeps_no_outputs(
    env: StackSettings, consumers: QueueConsumers
) -> None:
    user = new_id()
    slow = [{"type": "txt2img", "inline": True, "body": "x", "parameters": {"steps": 150, "width": 64, "height": 64}}]
    execution_id = start(make_pipeline(env, slow), user)
    with RunningWorker(env):
        wait_for(lambda: record(execution_id).status == "RUNNING", 60, "RUNNING")
        status, body = call_api("POST", f"/executions/{execution_id}/cancel", user)
        assert status == 202
        assert body["cancelRequested"] is True
        done = wait_final(execution_id, 60)
    assert done.status == "CANCELLED"
    assert not {key for key in result_objects(env, execution_id) if key.endswith(".png") or key == "result.json"}
    assert queue_depth(env, env.in_queue_url) == 0


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_a_worker_killed_mid_stage_runs_again_at_once_and_resumes_at_the_unfinished_stage(
    stack_env: StackSettings, monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL of the supervisor's worker process while it computes stage 1 of 2: its successor on the slot gives
    the message back at once (the queue's 60 s visibility would otherwise hold it), resumes at stage 1 from the
    checkpoint in S3 (stage 0 is not computed again), and the execution succeeds."""
    for name, value in local_models_env(tiny_models_dir).items():
        monkeypatch.setenv(name, value)
    for name, value in {"POLL_WAIT_S": "1", "DEVICE": "cpu", "PROGRESS_INTERVAL_S": "0"}.items():
        monkeypatch.setenv(name, value)
    env = private_queues(stack_env, monkeypatch, in_visibility_s=60)
    stages = [
        {"type": "txt2img", "inline": True, "body": "a fox", "parameters": {"steps": 2, "width": 64, "height": 64}},
        {"type": "img2img", "inline": True, "body": "oil", "parameters": {"steps": 150, "strength": 1.0}},
    ]
    user = new_id()
    execution_id = start(make_pipeline(env, stages), user)
    log_path = tmp_path / "supervisor.log"
    consumers = QueueConsumers(env, wait_s=1).start()
    with log_path.open("wb") as log_file:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "gpu_worker"], env=dict(os.environ), cwd=ROOT, stderr=log_file
        )
        try:
            checkpoint = f"{execution_prefix(execution_id)}checkpoint.json"
            wait_for(lambda: "checkpoint.json" in result_objects(env, execution_id), 150, "stage 0's checkpoint")
            wait_for(lambda: (record(execution_id).progress or {}).get("stage") == 2, 60, "stage 1 to run")
            [worker_pid] = _children(supervisor.pid)
            os.kill(worker_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: '"fromStage": 1' in log_path.read_text(errors="replace"), 120, "the resumed start")
            resumed_after_s = time.monotonic() - killed_at
            sqs = client("sqs", env)
            attributes = sqs.get_queue_attributes(QueueUrl=env.in_queue_url, AttributeNames=["All"])["Attributes"]
            assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # held by the successor
            status, _body = call_api("POST", f"/executions/{execution_id}/cancel", user)
            assert status == 202  # 150 steps are long here: cancelling also shows the resumed run is live
            done = wait_final(execution_id, 120)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(60)
            consumers.stop()
    print(f"killed -> running again (resumed at stage 1) in {resumed_after_s:.1f} s")
    assert resumed_after_s < 90  # 30 s is the target (bench); this machine is shared and slow to start torch
    assert done.status == "CANCELLED"
    assert checkpoint.removeprefix(execution_prefix(execution_id)) not in result_objects(env, execution_id)


def test_duplicate_deliveries_produce_one_result(env: StackSettings, consumers: QueueConsumers) -> None:
    user = new_id()
    execution_id = start(make_pipeline(env, TXT2IMG), user)
    sqs = client("sqs", env)
    [message] = sqs.receive_message(QueueUrl=env.in_queue_url, WaitTimeSeconds=1)["Messages"]
    sqs.change_message_visibility(
        QueueUrl=env.in_queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    sqs.send_message(QueueUrl=env.in_queue_url, MessageBody=message["Body"])  # the same message, delivered twice

    rendered: list[bytes] = []
    encode = endings_module.encode_png

    def keep(image: Any) -> bytes:
        rendered.append(encode(image))
        return rendered[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(endings_module, "encode_png", keep)
        with RunningWorker(env):
            done = wait_final(execution_id)
            wait_for(lambda: queue_depth(env, env.in_queue_url) == 0, 30, "both deliveries to be done")
    assert done.status == "SUCCEEDED"
    assert 1 <= len(rendered) <= 2
    assert len(set(rendered)) == 1
    stored = client("s3", env).get_object(
        Bucket=env.results_bucket, Key=f"{execution_prefix(execution_id)}stage-0-0.png"
    )
    assert stored["Body"].read() == rendered[0]
    assert result_objects(env, execution_id) == {"request.json", "result.json", "stage-0-0.png"}


def test_a_message_that_fails_every_attempt_ends_in_the_dlq_and_its_execution_failed(
    env: StackSettings, consumers: QueueConsumers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message given back on every attempt is received maxReceiveCount times, dead-lettered, and failed."""

    class Failing:
        def run(self, *args: Any) -> Any:
            raise TransientFailure("S3 is down for this one")

    monkeypatch.setattr(compute_module, "runner_for", lambda stage_type: Failing())
    user = new_id()
    execution_id = start(make_pipeline(env, TXT2IMG), user)
    client("sqs", env).send_message(QueueUrl=env.in_queue_url, MessageBody="not even json")
    with RunningWorker(env, retry_backoff_s=0):
        done = wait_final(execution_id, 90)
        wait_for(lambda: queue_depth(env, env.in_queue_url) == 0, 60, "the in-queue to empty")
    assert done.status == "FAILED"
    assert done.error["code"] == "RETRIES_EXHAUSTED"
    assert "dead-letter" in done.error["message"]
    wait_for(lambda: queue_depth(env, env.backend_dlqs["gpu-fleet"]) == 0, 30, "the DLQ handler to drain")


def test_a_stage_the_model_cannot_do_fails_with_bad_input(env: StackSettings, consumers: QueueConsumers) -> None:
    user = new_id()
    too_long = [{"type": "txt2txt", "inline": True, "body": "x", "parameters": {"maxNewTokens": 2048}}]
    execution_id = start(make_pipeline(env, too_long), user)
    with RunningWorker(env):
        done = wait_final(execution_id)
    assert done.status == "FAILED"
    assert done.error["code"] == "BAD_INPUT"
    assert "maxNewTokens" in done.error["message"]


def test_settings_reach_the_worker(env: StackSettings) -> None:
    settings = get_worker_settings()
    assert settings.in_queue_url == env.in_queue_url
    assert json.loads(os.environ["MODELS"])
