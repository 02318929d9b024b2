"""The worker's failure handling on in-memory fakes: what is failed at once, retried, cancelled, or left alone.

One item's failure or cancellation never fails the other items of its batch.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpu_worker import compute as compute_module
from gpu_worker.seams import WorkerIo
from gpu_worker.worker import Worker
from shared.errors import BadInput, OutOfMemory, TransientFailure
from shared.messages import MESSAGE_VERSION
from shared.stages import execution_prefix, manifest_key
from tests.unit.execution_fakes import unit_settings
from tests.unit.worker.fakes import (
    IN_QUEUE,
    OUT_QUEUE,
    FakeBlobs,
    FakeQueues,
    FakeRecords,
    FakeRegistry,
    ScriptedRunner,
)

RESULTS = "results"
BACKOFF_S = 7


class Harness:
    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        runner: ScriptedRunner,
        max_batch_size: int = 4,
        progress_interval_s: float = 0,
        metrics: Any = None,
    ) -> None:
        settings = unit_settings(
            in_queue_url=IN_QUEUE,
            out_queue_url=OUT_QUEUE,
            models={"tiny": {"kind": "diffusers", "source": "/nowhere"}},
            default_models={"txt2img": "tiny", "txt2txt": "tiny"},
            batch_window_ms=0,
            max_batch_size=max_batch_size,
            progress_interval_s=progress_interval_s,
        )
        self.queues, self.blobs, self.records, self.runner = FakeQueues(), FakeBlobs(), FakeRecords(), runner
        monkeypatch.setattr(compute_module, "runner_for", lambda stage_type: runner)
        self.worker = Worker(
            settings,
            WorkerIo(blobs=self.blobs, queues=self.queues, cancellations=self.records),  # type: ignore[arg-type]
            registry=FakeRegistry(),
            overlap_io=False,
            retry_backoff_s=BACKOFF_S,
            metrics=metrics,
        )

    def submit(self, execution_id: str, prompt: str, stages: list[str] | None = None) -> str:
        """Write request.json and queue its message; returns the message's receipt handle."""
        request = {
            "executionId": execution_id,
            "pipelineId": "p1",
            "userId": "u1",
            "backend": "gpu-fleet",
            "stages": [{"index": n, "type": t, "body": prompt} for n, t in enumerate(stages or ["txt2img"])],
            "createdAt": "2026-01-01T00:00:00Z",
            "deadline": "2999-01-01T00:00:00Z",
        }
        key = f"{execution_prefix(execution_id)}request.json"
        self.blobs.put_json(RESULTS, key, request)
        body = {"executionId": execution_id, "resUri": f"s3://{RESULTS}/{key}", "version": MESSAGE_VERSION}
        return self.queues.put(json.dumps(body)).receipt_handle

    def run_until_idle(self) -> None:
        self.worker.intake.poll_once(wait_s=0)
        while self.worker.step(timeout_s=0):
            pass

    def finished(self, execution_id: str) -> dict[str, Any]:
        return self.queues.finished()[execution_id]


def test_a_batch_runs_as_one_call_and_every_item_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    receipts = [h.submit(f"e{n}", f"prompt {n}") for n in range(3)]
    h.run_until_idle()
    assert h.runner.calls == [["prompt 0", "prompt 1", "prompt 2"]]
    for n in range(3):
        finished = h.finished(f"e{n}")
        assert (finished["status"], finished["success"]) == ("SUCCEEDED", True)
        assert finished["executionUri"] == f"s3://{RESULTS}/{manifest_key(f'e{n}')}"
        manifest = h.blobs.get_json(RESULTS, manifest_key(f"e{n}"))
        assert [o["key"] for o in manifest["outputs"]] == [f"{execution_prefix(f'e{n}')}stage-0-0.png"]
        assert h.blobs.get_bytes(RESULTS, manifest["outputs"][0]["key"]).startswith(b"\x89PNG")
    assert sorted(h.queues.deleted) == sorted(receipts)
    events = [e["event"] for e in h.queues.sent if e["executionId"] == "e0"]
    assert events[0] == "started"
    assert "progress" in events
    assert events[-1] == "finished"
    # Every event names the owner (request.json's userId): the results consumer writes without reading first.
    assert {e.get("userId") for e in h.queues.sent} == {"u1"}


def test_progress_events_are_throttled_from_started_and_stage_ends_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each event is an SQS send: "started" counts as the first progress report, the end of a stage other than
    # the last is always reported, and the last stage's end is the finished event itself (100%).
    h = Harness(monkeypatch, ScriptedRunner(kind="text"), progress_interval_s=3600)
    h.submit("one", "a")
    h.submit("two", "b", stages=["txt2txt", "txt2txt"])
    h.run_until_idle()

    def events(execution_id: str) -> list[tuple[str, int]]:
        sent = [e for e in h.queues.sent if e["executionId"] == execution_id]
        return [(e["event"], e["progress"]["percent"]) for e in sent]

    assert events("one") == [("started", 0), ("finished", 100)]
    assert events("two") == [("started", 0), ("progress", 50), ("finished", 100)]


def test_batches_respect_max_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner(), max_batch_size=2)
    for n in range(5):
        h.submit(f"e{n}", f"p{n}")
    h.run_until_idle()
    assert [len(call) for call in h.runner.calls] == [2, 2, 1]
    assert len(h.queues.finished()) == 5


def test_stages_run_in_order_and_text_flows_into_the_next_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner(kind="text"))
    h.submit("e1", "hello", stages=["txt2txt", "txt2txt"])
    h.run_until_idle()
    assert h.runner.calls == [["hello"], ["hello"]]
    manifest = h.blobs.get_json(RESULTS, manifest_key("e1"))
    assert [(o["stage"], o["text"]) for o in manifest["outputs"]] == [(0, "text for hello"), (1, "text for hello")]


def test_out_of_memory_fails_only_the_item_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    def behaviour(prompts: list[str]) -> None:
        if len(prompts) > 1 or prompts == ["huge"]:
            raise OutOfMemory("CUDA out of memory")

    h = Harness(monkeypatch, ScriptedRunner(behaviour))
    h.submit("small", "small")
    h.submit("huge", "huge")
    h.run_until_idle()
    assert h.runner.calls == [["small", "huge"], ["small"], ["huge"]]  # the batch, then each alone
    assert h.finished("small")["status"] == "SUCCEEDED"
    failed = h.finished("huge")
    assert (failed["status"], failed["error"]["code"]) == ("FAILED", "OUT_OF_MEMORY")
    assert len(h.queues.deleted) == 2  # both are done for good: no retry of an out-of-memory


def test_bad_input_fails_at_once_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def behaviour(prompts: list[str]) -> None:
        raise BadInput("steps * strength must be at least 1")

    h = Harness(monkeypatch, ScriptedRunner(behaviour))
    receipt = h.submit("e1", "x")
    h.run_until_idle()
    finished = h.finished("e1")
    assert finished["status"] == "FAILED"
    assert finished["error"] == {"code": "BAD_INPUT", "message": "steps * strength must be at least 1"}
    assert h.queues.deleted == [receipt]
    assert manifest_key("e1") not in h.blobs.keys(RESULTS)


def test_a_transient_failure_gives_the_message_back_for_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    def behaviour(prompts: list[str]) -> None:
        raise TransientFailure("S3 throttled")

    h = Harness(monkeypatch, ScriptedRunner(behaviour))
    receipt = h.submit("e1", "x")
    h.run_until_idle()
    assert h.queues.deleted == []
    assert (receipt, BACKOFF_S) in h.queues.visibility
    assert "e1" not in h.queues.finished()
    assert h.worker.open_jobs() == 0


def test_an_unexpected_error_spares_the_rest_of_the_batch_and_fails_its_own_execution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash we cannot classify: the batch runs again item by item, and the item that still crashes ends
    FAILED INTERNAL (deleted, not left to come back); the worker goes on."""

    def behaviour(prompts: list[str]) -> None:
        if "bad" in prompts:
            raise RuntimeError("something odd in the model")

    h = Harness(monkeypatch, ScriptedRunner(behaviour))
    h.submit("good", "good")
    bad = h.submit("bad", "bad")
    h.run_until_idle()
    assert h.runner.calls == [["good", "bad"], ["good"], ["bad"]]
    assert h.finished("good")["status"] == "SUCCEEDED"
    assert (h.finished("bad")["status"], h.finished("bad")["error"]["code"]) == ("FAILED", "INTERNAL")
    assert bad in h.queues.deleted
    assert h.worker.open_jobs() == 0


def test_cancelling_one_item_does_not_cancel_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())

    def cancel_mid_call(prompts: list[str]) -> None:
        h.records.stopping.add("stopped")  # cancel requested while the batch computes

    h.runner.behaviour = cancel_mid_call
    h.submit("kept", "kept")
    h.submit("stopped", "stopped")
    h.run_until_idle()
    assert h.finished("kept")["status"] == "SUCCEEDED"
    assert h.finished("stopped")["status"] == "CANCELLED"
    assert not any(
        key.startswith(execution_prefix("stopped")) and key.endswith(".png") for key in h.blobs.keys(RESULTS)
    )
    assert len(h.queues.deleted) == 2


def test_an_execution_cancelled_while_queued_is_never_started(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    h.records.skip.add("e1")
    receipt = h.submit("e1", "x")
    h.run_until_idle()
    assert h.runner.calls == []
    assert h.queues.sent == []  # no started event: the record stays CANCELLED
    assert h.queues.deleted == [receipt]


def test_a_poison_message_is_left_for_the_dead_letter_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    h.queues.put("{not json")
    h.queues.put(json.dumps({"executionId": "e1", "resUri": "s3://results/x", "version": 99}))
    h.run_until_idle()
    assert (h.queues.deleted, h.queues.visibility, h.queues.sent, h.runner.calls) == ([], [], [], [])


def test_a_request_json_that_is_not_valid_fails_the_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    h.blobs.put_json(RESULTS, "executions/e1/request.json", {"executionId": "e1", "stages": "nope"})
    receipt = h.queues.put(
        json.dumps({"executionId": "e1", "resUri": f"s3://{RESULTS}/executions/e1/request.json", "version": 1})
    ).receipt_handle
    h.run_until_idle()
    assert h.finished("e1")["error"]["code"] == "BAD_INPUT"
    assert h.queues.deleted == [receipt]


def test_a_deleted_execution_is_dropped_without_events(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    receipt = h.queues.put(
        json.dumps({"executionId": "gone", "resUri": f"s3://{RESULTS}/executions/gone/request.json", "version": 1})
    ).receipt_handle
    h.run_until_idle()
    assert (h.queues.deleted, h.queues.sent) == ([receipt], [])


def test_shutdown_gives_back_what_it_cannot_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    receipt = h.submit("e1", "x")
    h.worker.intake.poll_once(wait_s=0)
    h.worker.shutdown(grace_s=0)
    assert (receipt, 0) in h.queues.visibility
    assert h.queues.deleted == []
    assert h.worker.heartbeat.held() == 0


def test_a_batch_whose_items_are_all_cancelled_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())

    def cancel_everything(prompts: list[str]) -> None:
        h.records.stopping.update({"a", "b"})

    h.runner.behaviour = cancel_everything
    h.submit("a", "a")
    h.submit("b", "b")
    h.run_until_idle()
    assert {h.finished(e)["status"] for e in "ab"} == {"CANCELLED"}
    assert manifest_key("a") not in h.blobs.keys(RESULTS)
