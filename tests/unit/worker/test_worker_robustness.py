"""No input, crash or burst stops the worker: on in-memory fakes (no network, no model).

Hostile inputs end their own execution FAILED BAD_INPUT while the next one still succeeds; unexpected errors
anywhere end their execution INTERNAL; deadlines end it TIMEOUT; a message received before runs alone; a
redelivery resumes at its first unfinished stage; a deleted execution writes nothing more (C2); a dead thread
or a wedged compute loop gives everything back and ends the process; usage rides on the finished event (C1).
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
from PIL import Image

from gpu_worker import endings as endings_module
from gpu_worker import intake as intake_module
from gpu_worker.held import ReceiptJournal, release_left_over
from gpu_worker.jobs import checkpoint_key
from gpu_worker.watchdog import ComputeProgress, StallLimits, Watchdog
from shared.messages import MESSAGE_VERSION, parse_out_message
from shared.stages import PROMPT_MAX_BYTES, execution_prefix, manifest_key
from tests.unit.worker.fakes import ScriptedRunner
from tests.unit.worker.test_inputs import png_header_only
from tests.unit.worker.test_worker_failures import RESULTS, Harness

UPLOADS = "uploads"


def submit(
    h: Harness,
    execution_id: str,
    stages: list[dict[str, Any]],
    *,
    receive_count: int = 1,
    deadline: str = "2999-01-01T00:00:00Z",
    **fields: Any,
) -> str:
    request = {
        "executionId": execution_id,
        "pipelineId": "p1",
        "userId": "u1",
        "backend": "gpu-fleet",
        "stages": [{"index": n, **stage} for n, stage in enumerate(stages)],
        "createdAt": "2026-01-01T00:00:00Z",
        "deadline": deadline,
        **fields,
    }
    key = f"{execution_prefix(execution_id)}request.json"
    h.blobs.put_json(RESULTS, key, request)
    body = {"executionId": execution_id, "resUri": f"s3://{RESULTS}/{key}", "version": MESSAGE_VERSION}
    return h.queues.put(json.dumps(body), receive_count=receive_count).receipt_handle


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def code(h: Harness, execution_id: str) -> tuple[str, str | None]:
    finished = h.finished(execution_id)
    return finished["status"], (finished.get("error") or {}).get("code")


IMG2IMG = {"type": "img2img", "body": "paint it", "parameters": {"steps": 2, "strength": 1.0, "model": "tiny"}}
TXT2IMG = {"type": "txt2img", "body": "a fox"}


def test_hostile_inputs_fail_their_own_execution_and_the_next_one_still_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    h.blobs.put_bytes(UPLOADS, "bomb.png", png_header_only(14000, 14000), "image/png")
    h.blobs.put_bytes(UPLOADS, "huge.txt", b"x" * (10 * 1024 * 1024), "text/plain")
    submit(h, "bomb", [IMG2IMG], imageUri=f"s3://{UPLOADS}/bomb.png")
    submit(h, "huge", [{"type": "txt2img", "bodyUri": f"s3://{UPLOADS}/huge.txt"}])
    submit(h, "blowup", [{"type": "txt2img", "body": "{{a}}" * 400}], variables={"a": "y" * PROMPT_MAX_BYTES})
    submit(h, "other", [TXT2IMG])
    h.run_until_idle()
    for hostile in ("bomb", "huge", "blowup"):
        assert code(h, hostile) == ("FAILED", "BAD_INPUT")
    assert code(h, "other") == ("SUCCEEDED", None)
    assert h.runner.calls == [["a fox"]]  # no hostile input reached the model
    assert h.worker.open_jobs() == 0
    assert h.worker.heartbeat.held() == 0


def test_an_oversized_img2img_input_reaches_the_model_within_the_stage_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[tuple[int, int]] = []
    h = Harness(monkeypatch, ScriptedRunner())
    original = h.runner.run

    def run(items: list[Any], *args: Any) -> Any:
        sizes.extend(item.image.size for item in items)
        return original(items, *args)

    h.runner.run = run  # type: ignore[method-assign,assignment]
    h.blobs.put_bytes(UPLOADS, "wide.png", png((2048, 64)), "image/png")
    submit(h, "wide", [IMG2IMG], imageUri=f"s3://{UPLOADS}/wide.png")
    h.run_until_idle()
    assert code(h, "wide") == ("SUCCEEDED", None)
    assert sizes == [(1024, 64)]


def test_an_unexpected_error_while_taking_a_message_fails_that_execution_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = intake_module.prefetch_inputs

    def prefetch(blobs: Any, job: Any) -> None:
        if job.execution_id == "broken":
            raise ZeroDivisionError("a bug")
        real(blobs, job)

    monkeypatch.setattr(intake_module, "prefetch_inputs", prefetch)
    h = Harness(monkeypatch, ScriptedRunner())
    submit(h, "broken", [TXT2IMG])
    submit(h, "fine", [TXT2IMG])
    h.run_until_idle()
    assert code(h, "broken") == ("FAILED", "INTERNAL")
    assert code(h, "fine") == ("SUCCEEDED", None)


def test_an_unexpected_error_while_writing_outputs_fails_that_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    real = endings_module.encode_png

    def encode(image: Any) -> bytes:
        if image.size == (8, 8) and image.getpixel((0, 0))[0] == len("broken"):
            raise RuntimeError("encoder bug")
        return real(image)

    monkeypatch.setattr(endings_module, "encode_png", encode)
    h = Harness(monkeypatch, ScriptedRunner())
    broken = submit(h, "broken", [{"type": "txt2img", "body": "broken"}])
    submit(h, "fine", [TXT2IMG])
    h.run_until_idle()
    assert code(h, "broken") == ("FAILED", "INTERNAL")
    assert code(h, "fine") == ("SUCCEEDED", None)
    assert broken in h.queues.deleted
    assert manifest_key("broken") not in h.blobs.keys(RESULTS)


def test_a_message_received_before_runs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    submit(h, "a", [{"type": "txt2img", "body": "a"}])
    submit(h, "again", [{"type": "txt2img", "body": "again"}], receive_count=2)
    submit(h, "b", [{"type": "txt2img", "body": "b"}])
    h.run_until_idle()
    assert sorted(h.runner.calls) == [["a", "b"], ["again"]]
    assert {code(h, e)[0] for e in ("a", "again", "b")} == {"SUCCEEDED"}


def test_an_execution_past_its_deadline_ends_timeout_queued_or_running(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    submit(h, "late", [TXT2IMG], deadline="2020-01-01T00:00:00Z")
    h.run_until_idle()
    assert code(h, "late") == ("FAILED", "TIMEOUT")

    def expire(prompts: list[str]) -> None:  # the deadline passes during the model call
        job = next(iter(h.worker.jobs.all()))
        job.__dict__["deadline"] = job.deadline.replace(year=2020)

    h.runner.behaviour = expire
    submit(h, "running", [TXT2IMG])
    h.run_until_idle()
    assert code(h, "running") == ("FAILED", "TIMEOUT")
    assert manifest_key("running") not in h.blobs.keys(RESULTS)


def test_a_redelivered_execution_resumes_at_its_first_unfinished_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    stages = [{"type": "txt2txt", "body": "first"}, {"type": "txt2img", "body": "second {{previous}}"}]

    in_s3_when_killed: dict[Any, bytes] = {}

    def killed_in_stage_1(prompts: list[str]) -> None:
        if prompts[0].startswith("second"):  # what S3 holds when the process dies here
            in_s3_when_killed.update(h.blobs.objects)

    h = Harness(monkeypatch, ScriptedRunner(kind="text"))
    h.runner.behaviour = killed_in_stage_1
    submit(h, "e1", stages)
    h.run_until_idle()
    checkpoint = json.loads(in_s3_when_killed[(RESULTS, checkpoint_key("e1"))])
    assert (checkpoint["nextStage"], checkpoint["previousText"]) == (1, "text for first")

    h2 = Harness(monkeypatch, ScriptedRunner(kind="text"))
    h2.blobs.objects = dict(in_s3_when_killed)
    submit(h2, "e1", stages, receive_count=2)
    h2.run_until_idle()
    assert h2.runner.calls == [["second text for first"]]  # stage 0 is not computed again
    assert code(h2, "e1") == ("SUCCEEDED", None)
    manifest = h2.blobs.get_json(RESULTS, manifest_key("e1"))
    assert [(o["stage"], o["type"]) for o in manifest["outputs"]] == [(0, "text"), (1, "text")]
    assert checkpoint_key("e1") not in h2.blobs.keys(RESULTS)
    assert [s["stage"] for s in h2.finished("e1")["usage"]["stages"]] == [0, 1]


def test_a_deleted_execution_writes_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())

    def delete_meanwhile(prompts: list[str]) -> None:
        h.records.deleted.add("gone")

    h.runner.behaviour = delete_meanwhile
    submit(h, "gone", [TXT2IMG])
    h.run_until_idle()
    assert h.finished("gone")["status"] == "CANCELLED"
    assert h.blobs.keys(RESULTS) == {f"{execution_prefix('gone')}request.json"}


def test_usage_rides_on_the_finished_event(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner(kind="text"))
    submit(h, "e1", [{"type": "txt2txt", "body": "a"}, {"type": "txt2txt", "body": "b"}])
    submit(h, "e2", [{"type": "txt2txt", "body": "c"}, {"type": "txt2txt", "body": "d"}])
    h.run_until_idle()
    usage = parse_out_message(h.finished("e1")).usage
    assert usage is not None
    assert [s.stage for s in usage.stages] == [0, 1]
    assert usage.gpu_seconds == pytest.approx(sum(s.seconds for s in usage.stages), abs=1e-3)
    assert "gpuSeconds" in h.finished("e2")["usage"]


def test_a_stop_interrupts_a_running_batch_at_its_next_step_and_gives_the_message_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    stop = threading.Event()

    def stop_mid_call(prompts: list[str]) -> None:
        stop.set()

    h.runner.behaviour = stop_mid_call
    receipt = submit(h, "e1", [TXT2IMG])
    h.worker._stop, h.worker._grace_s = stop, h.worker.settings.stop_grace_s  # the default: a stop acts at once
    h.worker.intake.poll_once(wait_s=0)
    h.worker.step(timeout_s=0)
    assert (receipt, 0) in h.queues.visibility
    assert h.queues.finished() == {}
    assert h.worker.open_jobs() == 0


def test_a_dead_thread_gives_every_held_message_back_and_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    fatal: list[str] = []
    h.worker._on_fatal = fatal.append
    receipt = submit(h, "e1", [TXT2IMG])
    h.worker.intake.poll_once(wait_s=0)  # held, waiting in the collector
    alive = {"intake": False}
    checks = {"intake": lambda: alive["intake"]}
    watchdog = Watchdog(ComputeProgress(), StallLimits(10, 60, 600), checks, h.worker.abandon, interval_s=0.01)
    assert watchdog.problem() == "the intake thread died"
    watchdog.start()
    watchdog.join(5)
    assert fatal == ["the intake thread died"]
    assert (receipt, 0) in h.queues.visibility


def test_the_intake_thread_survives_an_unexpected_error_and_a_killed_one_trips_the_watchdog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    h.worker.overlap_io = True
    calls = {"n": 0}

    class Killed(BaseException):
        pass

    def poll(wait_s: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("a bug in a poll")
        raise Killed

    monkeypatch.setattr(h.worker.intake, "poll_once", poll)
    monkeypatch.setattr(h.worker.intake.stopped, "wait", lambda timeout=None: False)
    with pytest.raises(Killed):
        h.worker.intake.loop()
    assert calls["n"] == 2  # the ValueError was logged and the loop went on


def test_a_wedged_compute_loop_is_detected_after_its_allowance() -> None:
    now = [0.0]
    progress = ComputeProgress(clock=lambda: now[0])
    limits = {"multiple": 10, "min_s": 5, "load_s": 100}
    progress.batch_started()
    for step in range(1, 5):
        now[0] += 1.0
        progress.stepped(step, 10)
    progress.batch_ended()
    assert progress.expected_step_s == pytest.approx(1.0)
    progress.batch_started()
    now[0] += 9.0
    assert progress.stall(**limits) is None  # 10 x 1 s per step
    now[0] += 2.0
    assert progress.stall(**limits) == pytest.approx(11.0)
    progress.batch_started(loading=True)
    now[0] += 50.0
    assert progress.stall(**limits) is None  # a model loads


def test_the_intake_holds_only_what_starts_within_about_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner(), max_batch_size=2)
    for n in range(6):
        submit(h, f"e{n}", [TXT2IMG])
    assert h.worker.intake.poll_once(wait_s=0) == 2  # one batch's worth, not the whole queue
    assert h.worker.intake.room() == 0
    assert len(h.queues.incoming) == 4  # visible to other workers
    now = [0.0]
    h.worker.progress = ComputeProgress(clock=lambda: now[0])
    h.worker.collector.drain()
    h.worker.progress.batch_started()
    assert h.worker.intake.room() == 0  # a batch started: how long it runs is not known yet
    now[0] += 1.0
    h.worker.progress.stepped(1, 100)
    assert h.worker.intake.room() == 0  # 99 s to go
    now[0] += 98.0
    h.worker.progress.stepped(99, 100)
    assert h.worker.intake.room() == 2


def test_on_ready_is_called_once_after_the_first_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    ready: list[bool] = []
    h.worker.intake._on_ready = lambda: ready.append(True)
    h.worker.intake.poll_once(wait_s=0)
    h.worker.intake.poll_once(wait_s=0)
    assert ready == [True]


def test_a_successor_gives_back_what_its_crashed_predecessor_held(tmp_path: Any) -> None:
    from tests.unit.worker.fakes import FakeQueues

    journal = ReceiptJournal.from_environment({"STAGEHUB_STATE_DIR": str(tmp_path), "STAGEHUB_SLOT": "3"})
    assert journal is not None
    journal.write(["r1", "r2"])
    queues = FakeQueues()
    assert release_left_over(journal, queues, "in-queue", visibility_s=60) == 2  # type: ignore[arg-type]
    assert queues.visibility == [("r1", 0), ("r2", 0)]
    assert journal.read(max_age_s=60) == []
    journal.write(["old"])
    assert journal.read(max_age_s=-1) == []  # lapsed by now: it may be another worker's


def test_the_held_receipts_file_follows_what_the_heartbeat_holds(tmp_path: Any) -> None:
    from gpu_worker.heartbeat import HeartbeatThread
    from tests.unit.worker.fakes import FakeQueues

    journal = ReceiptJournal(tmp_path / "held-0.json")
    heartbeat = HeartbeatThread(FakeQueues(), "in-queue", 60, journal)  # type: ignore[arg-type]
    heartbeat.track("m1", "r1")
    heartbeat.track("m2", "r2")
    assert journal.read(max_age_s=60) == ["r1", "r2"]
    heartbeat.untrack("m1")
    assert journal.read(max_age_s=60) == ["r2"]
    heartbeat.forget_all()
    assert journal.read(max_age_s=60) == []


def test_the_watchdog_names_a_wedged_compute_loop() -> None:
    now = [0.0]
    progress = ComputeProgress(clock=lambda: now[0])
    watchdog = Watchdog(progress, StallLimits(10, 5, 100), {}, lambda reason: None)
    progress.batch_started()
    now[0] += 6.0
    assert watchdog.problem() == "the compute loop made no progress for 6 s"
