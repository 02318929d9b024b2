"""A worker process whose thread dies anyway: its watchdog gives the held message back at once and the process
exits non-zero (the supervisor restarts it, tests/unit/worker/test_fleet.py); nothing stays invisible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_worker.tiny_models import local_models_env
from gpu_worker.worker import EXIT_ABANDONED
from shared.aws import client
from shared.settings import StackSettings
from tests.integration.executions_support import make_pipeline, new_id, private_queues
from tests.integration.test_worker import ROOT, start, wait_for

pytestmark = pytest.mark.timeout(300)


def _visibility(settings: StackSettings) -> tuple[int, int]:
    attributes = client("sqs", settings).get_queue_attributes(
        QueueUrl=settings.in_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.slow
def test_a_dead_intake_thread_gives_its_message_back_and_ends_the_process(
    stack_env: StackSettings, monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path
) -> None:
    for name, value in local_models_env(tiny_models_dir).items():
        monkeypatch.setenv(name, value)
    for name, value in {"POLL_WAIT_S": "1", "DEVICE": "cpu", "PROGRESS_INTERVAL_S": "0"}.items():
        monkeypatch.setenv(name, value)
    env = private_queues(stack_env, monkeypatch, in_visibility_s=60)  # a lapse would take a minute
    slow = [{"type": "txt2img", "inline": True, "body": "x", "parameters": {"steps": 150, "width": 64, "height": 64}}]
    start(make_pipeline(env, slow), new_id())
    program = [sys.executable, "-m", "tests.integration.worker_programs.intake_dies"]
    crashing = subprocess.run(program, env=dict(os.environ), cwd=ROOT, capture_output=True, timeout=240)
    assert crashing.returncode == EXIT_ABANDONED, crashing.stderr.decode(errors="replace")[-2000:]
    assert b"the intake thread died" in crashing.stderr
    wait_for(lambda: _visibility(env) == (1, 0), 10, "the message to be visible again")  # not a minute later
