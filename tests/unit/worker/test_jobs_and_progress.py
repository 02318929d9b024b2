"""Prompt rendering, seeds, deadlines, batch keys and progress: the worker's pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpu_worker.jobs import Job, derived_seed
from gpu_worker.progress import ProgressThrottle, overall_progress
from gpu_worker.stages import StageItem, batch_key, model_for
from shared.errors import BadInput, DeadlineExceeded
from shared.queues import ReceivedMessage
from shared.stages import ExecutionRequest
from tests.unit.execution_fakes import unit_settings


def request(stages: list[dict], variables: dict[str, str] | None = None, **fields: str) -> ExecutionRequest:
    values = {
        "executionId": "e1",
        "pipelineId": "p1",
        "userId": "u1",
        "backend": "gpu-fleet",
        "stages": [{"index": n, **stage} for n, stage in enumerate(stages)],
        "variables": variables or {},
        "createdAt": "2026-01-01T00:00:00Z",
        "deadline": "2026-01-01T01:00:00Z",
    }
    return ExecutionRequest.model_validate(values | fields)


def job(req: ExecutionRequest) -> Job:
    return Job(message=ReceivedMessage("m1", "r1", "{}", 1), request=req, throttle=ProgressThrottle(0))


def test_prompts_render_variables_and_the_previous_text() -> None:
    running = job(
        request(
            [{"type": "txt2txt", "body": "about {{subject}}"}, {"type": "txt2img", "body": "{{previous}}!"}],
            {"subject": "a fox"},
        )
    )
    assert running.prompt() == "about a fox"
    running.previous_text = "a red fox in snow"
    running.stage_index = 1
    assert running.prompt() == "a red fox in snow!"


def test_an_unknown_variable_is_bad_input() -> None:
    with pytest.raises(BadInput, match="colour"):
        job(request([{"type": "txt2img", "body": "a {{colour}} fox"}])).prompt()


def test_previous_without_an_earlier_text_is_bad_input() -> None:
    with pytest.raises(BadInput, match="previous"):
        job(request([{"type": "txt2img", "body": "{{previous}}"}])).prompt()


def test_a_prompt_by_reference_is_used_once_fetched() -> None:
    running = job(request([{"type": "txt2img", "bodyUri": "s3://uploads/u1/long.txt"}]))
    with pytest.raises(BadInput, match="no prompt"):
        running.prompt()
    running.referenced_prompts[0] = "a very long prompt"
    assert running.prompt() == "a very long prompt"


def test_img2img_takes_the_previous_image_else_the_input_image_else_fails() -> None:
    running = job(request([{"type": "img2img", "body": "x"}]))
    with pytest.raises(BadInput, match="no input image"):
        running.stage_item()
    running.input_image = "uploaded"
    assert running.stage_item().image == "uploaded"
    running.previous_images = ["rendered"]
    assert running.stage_item().image == "rendered"


def test_a_stage_without_a_seed_gets_one_fixed_by_execution_and_stage() -> None:
    """A duplicate delivery must render the same outputs, so the seed cannot be random per delivery."""
    stages = [{"type": "txt2img", "body": "a"}, {"type": "txt2img", "body": "b"}]
    first, again = job(request(stages)), job(request(stages))
    assert first.stage_item().params["seed"] == again.stage_item().params["seed"] == derived_seed("e1", 0)
    other = job(request(stages, executionId="e2"))
    assert other.stage_item().params["seed"] != first.stage_item().params["seed"]
    first.stage_index = 1
    assert first.stage_item().params["seed"] == derived_seed("e1", 1) != derived_seed("e1", 0)
    assert 0 <= derived_seed("e1", 0) < 2**63


def test_a_given_seed_is_kept() -> None:
    assert job(request([{"type": "txt2img", "body": "a", "parameters": {"seed": 7}}])).stage_item().params["seed"] == 7


def test_the_deadline_is_checked() -> None:
    running = job(request([{"type": "txt2img", "body": "a"}]))
    deadline = datetime(2026, 1, 1, 1, tzinfo=UTC)
    running.check_deadline(deadline - timedelta(seconds=1))
    with pytest.raises(DeadlineExceeded):
        running.check_deadline(deadline)


def test_batch_keys_separate_what_cannot_share_a_model_call() -> None:
    base = {"width": 64, "height": 64, "steps": 4, "scheduler": None, "guidanceScale": 7.5, "numImages": 1}
    key = batch_key("txt2img", "sd", StageItem("a", base | {"seed": 1}))
    assert key == batch_key("txt2img", "sd", StageItem("another prompt", base | {"seed": 2, "negativePrompt": "x"}))
    for change in ({"width": 128}, {"steps": 8}, {"scheduler": "DDIMScheduler"}, {"numImages": 2}):
        assert batch_key("txt2img", "sd", StageItem("a", base | change)) != key
    assert batch_key("txt2img", "other-model", StageItem("a", base)) != key


def test_img2img_batches_need_one_input_size() -> None:
    class Image:
        def __init__(self, size: tuple[int, int]) -> None:
            self.size = size

    params = {"steps": 4, "strength": 0.5, "guidanceScale": 7.5}
    small = batch_key("img2img", "sd", StageItem("a", params, Image((64, 64))))
    assert small == batch_key("img2img", "sd", StageItem("b", params, Image((64, 64))))
    assert small != batch_key("img2img", "sd", StageItem("a", params, Image((128, 64))))


def test_sampled_text_batches_only_with_the_same_seed() -> None:
    """generate() draws from one random stream for the batch: only equal seeds stay reproducible."""
    sampled = {"maxNewTokens": 8, "temperature": 0.7, "topP": 0.9}
    assert batch_key("txt2txt", "lm", StageItem("a", sampled | {"seed": 1})) != batch_key(
        "txt2txt", "lm", StageItem("a", sampled | {"seed": 2})
    )
    greedy = sampled | {"temperature": 0.0}
    assert batch_key("txt2txt", "lm", StageItem("a", greedy | {"seed": 1})) == batch_key(
        "txt2txt", "lm", StageItem("b", greedy | {"seed": 2})
    )


def test_the_model_is_the_stage_parameter_or_the_default_and_must_be_known() -> None:
    settings = unit_settings(
        models={"sd": {"kind": "diffusers", "source": "/m/sd"}, "sd2": {"kind": "diffusers", "source": "/m/sd2"}},
        default_models={"txt2img": "sd"},
    )
    assert model_for(settings, "txt2img", None) == "sd"
    assert model_for(settings, "txt2img", "sd2") == "sd2"
    with pytest.raises(BadInput, match="unknown model"):
        model_for(settings, "txt2img", "nope")
    with pytest.raises(BadInput, match="no default model"):
        model_for(settings, "txt2txt", None)


@pytest.mark.parametrize(
    ("stage_index", "stages", "step", "steps", "percent"),
    [(0, 1, 0, 10, 0), (0, 1, 5, 10, 50), (0, 1, 10, 10, 99), (1, 2, 0, 4, 50), (1, 2, 2, 4, 75), (2, 3, 3, 3, 99)],
)
def test_progress_spans_every_stage_and_stays_below_100_until_finished(
    stage_index: int, stages: int, step: int, steps: int, percent: int
) -> None:
    progress = overall_progress(stage_index, stages, step, steps)
    assert (progress.stage, progress.stages, progress.step, progress.steps) == (stage_index + 1, stages, step, steps)
    assert progress.percent == percent


def test_progress_events_are_throttled_unless_forced() -> None:
    now = [0.0]
    throttle = ProgressThrottle(0.25, clock=lambda: now[0])
    assert throttle.allow()
    now[0] = 0.1
    assert not throttle.allow()
    assert throttle.allow(force=True)
    now[0] = 0.3
    assert not throttle.allow()  # the forced one restarted the interval
    now[0] = 0.36
    assert throttle.allow()
