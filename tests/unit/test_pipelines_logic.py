"""The pipelines domain with in-memory stores: whole-chain validation, the sharded list, deletes and ratings."""

from __future__ import annotations

from typing import Any

import pytest

from functions.pipelines import logic
from functions.pipelines.schemas import CreatePipeline
from functions.pipelines.store import RatingOutcome, list_partition
from shared import resources as res
from shared.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from tests.unit.execution_fakes import unit_settings
from tests.unit.pipeline_fakes import FakeBlobs, FakePipelineStore, FakeRatingStore

TEXT = {"type": "txt2txt", "inline": True, "body": "a fox", "parameters": {}}
IMAGE = {"type": "txt2img", "inline": True, "body": "a fox", "parameters": {}}
PREVIOUS = {"type": "txt2img", "inline": True, "body": "{{previous}}, oil", "parameters": {}}


@pytest.fixture
def deps() -> logic.PipelineDeps:
    pipelines = FakePipelineStore({"alice": "Alice"})
    return logic.PipelineDeps(unit_settings(), FakeBlobs(), pipelines, FakeRatingStore(pipelines))  # type: ignore[arg-type]


def _create(deps: logic.PipelineDeps, stages: list[dict[str, Any]], user: str = "alice") -> Any:
    return logic.create_pipeline(user, CreatePipeline.model_validate({"name": "p", "stages": stages}), deps)


def _problems(deps: logic.PipelineDeps, stages: list[dict[str, Any]]) -> list[list[Any]]:
    with pytest.raises(ValidationFailed) as exc:
        _create(deps, stages)
    return [d["loc"] for d in exc.value.details or []]


def test_a_pipeline_is_stored_in_its_list_shard_with_the_authors_name(deps: logic.PipelineDeps) -> None:
    pipeline = _create(deps, [TEXT, PREVIOUS])
    record = deps.pipelines.get(pipeline.pipeline_id)
    assert record is not None
    assert (record.author_name, record.list_partition) == ("Alice", list_partition(pipeline.pipeline_id))
    assert deps.blobs.get_json("pipelines", record.definition_key)["stages"][1]["body"] == "{{previous}}, oil"


def test_list_shards_spread_pipelines_over_every_shard() -> None:
    import uuid

    shards = {list_partition(str(uuid.uuid4())) for _ in range(400)}
    assert shards == {f"ALL#{n}" for n in range(res.PIPELINE_LIST_SHARDS)}


@pytest.mark.parametrize(
    ("stages", "where"),
    [
        ([PREVIOUS], ["body", "stages", 0, "body"]),  # the first stage has no previous output
        ([IMAGE, PREVIOUS], ["body", "stages", 1, "body"]),  # an image stage gives no text
        ([TEXT, IMAGE | {"parameters": {"scheduler": "__init__"}}], ["body", "stages", 1, "parameters", "scheduler"]),
        ([IMAGE | {"parameters": {"steps": True}}], ["body", "stages", 0, "parameters", "steps"]),
        ([IMAGE | {"parameters": {"guidanceScale": False}}], ["body", "stages", 0, "parameters", "guidanceScale"]),
        ([TEXT | {"parameters": {"seed": True}}], ["body", "stages", 0, "parameters", "seed"]),
    ],
)
def test_chain_and_parameter_gaps_are_422(deps: logic.PipelineDeps, stages: list[dict[str, Any]], where: Any) -> None:
    assert where in _problems(deps, stages)
    assert deps.pipelines.records == {}  # type: ignore[attr-defined]


def test_allowed_schedulers_and_previous_after_text_are_accepted(deps: logic.PipelineDeps) -> None:
    _create(deps, [TEXT, PREVIOUS | {"parameters": {"scheduler": "EulerDiscreteScheduler", "steps": 4}}])


def test_referenced_prompts_are_read_and_their_templates_checked(deps: logic.PipelineDeps) -> None:
    blobs: FakeBlobs = deps.blobs  # type: ignore[assignment]
    uri = blobs.upload("alice", b"{{previous}} at night", "text/plain")
    referenced = {"type": "txt2img", "inline": False, "body": uri, "parameters": {}}
    assert ["body", "stages", 1, "body"] in _problems(deps, [IMAGE, referenced])
    assert _create(deps, [TEXT, referenced]).stages[1].body == uri


@pytest.mark.parametrize(
    "make_upload",
    [
        lambda b: b.upload("alice", b"x" * 2000, "text/plain", declared_size=1024),  # larger than declared
        lambda b: b.upload("alice", b"x" * (16 * 1024 + 1), "text/plain"),  # over the inline limit
        lambda b: b.upload("alice", b"\xff\xfe", "text/plain"),  # not UTF-8
        lambda b: b.upload("bob", b"mine", "text/plain"),  # another user's
        lambda b: b.upload("alice", b"\x89PNG", "image/png"),  # not a text upload
        lambda b: "s3://uploads/uploads/alice/prompt.txt",  # not a key POST /uploads issued
    ],
)
def test_unusable_referenced_prompts_are_422(deps: logic.PipelineDeps, make_upload: Any) -> None:
    stage = TEXT | {"inline": False, "body": make_upload(deps.blobs)}
    assert _problems(deps, [stage]) == [["body", "stages", 0, "body"]]


def test_all_pipelines_page_newest_first_by_opaque_cursor(deps: logic.PipelineDeps) -> None:
    created = [_create(deps, [TEXT]).pipeline_id for _ in range(5)]
    seen, cursor = [], None
    while True:
        items, cursor = logic.list_all_pipelines("bob", 2, cursor, deps)
        seen += [item.pipeline_id for item in items]
        if cursor is None:
            break
    records = [deps.pipelines.get(p) for p in created]
    assert seen == [r.pipeline_id for r in sorted(records, key=lambda r: r.sort_key, reverse=True)]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "cursor",
    ["not base64!", "e30=", "eyJiZWZvcmUiOiAxfQ==", "eyJiZWZvcmUiOiAieCJ9", "eyJzb3J0S2V5IjogeyJTIjogIngifX0="],
)
def test_a_cursor_the_list_did_not_issue_is_400(deps: logic.PipelineDeps, cursor: str) -> None:
    with pytest.raises(BadRequest):
        logic.list_all_pipelines("bob", 2, cursor, deps)


def test_only_the_author_deletes_and_a_concurrent_delete_is_404(deps: logic.PipelineDeps) -> None:
    pipeline_id = _create(deps, [TEXT]).pipeline_id
    with pytest.raises(Forbidden):
        logic.delete_pipeline(pipeline_id, "bob", deps)
    deps.pipelines.vanish_on_delete = True  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        logic.delete_pipeline(pipeline_id, "alice", deps)


def test_deleting_removes_the_definition_and_the_ratings(deps: logic.PipelineDeps) -> None:
    pipeline_id = _create(deps, [TEXT]).pipeline_id
    logic.rate_pipeline(pipeline_id, "bob", 4, deps)
    logic.delete_pipeline(pipeline_id, "alice", deps)
    assert deps.ratings.ratings == {}  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        logic.get_pipeline(pipeline_id, "bob", deps)


def test_ratings_are_one_per_user_and_averaged(deps: logic.PipelineDeps) -> None:
    pipeline_id = _create(deps, [TEXT]).pipeline_id
    assert logic.rate_pipeline(pipeline_id, "bob", 4, deps).model_dump() == {"average": 4.0, "count": 1, "mine": 4}
    assert logic.rate_pipeline(pipeline_id, "bob", 2, deps).model_dump() == {"average": 2.0, "count": 1, "mine": 2}
    assert logic.rate_pipeline(pipeline_id, "carol", 5, deps).model_dump() == {"average": 3.5, "count": 2, "mine": 5}
    with pytest.raises(Forbidden):
        logic.rate_pipeline(pipeline_id, "alice", 5, deps)
    (summary,) = logic.list_all_pipelines("bob", 10, None, deps)[0]
    assert summary.rating.model_dump() == {"average": 3.5, "count": 2, "mine": 2}


def test_a_rating_that_conflicts_is_retried_until_it_applies(
    deps: logic.PipelineDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logic.time, "sleep", lambda _: None)
    pipeline_id = _create(deps, [TEXT]).pipeline_id
    ratings: FakeRatingStore = deps.ratings  # type: ignore[assignment]
    ratings.outcomes = [RatingOutcome.CHANGED] * 5
    assert logic.rate_pipeline(pipeline_id, "bob", 3, deps).count == 1
    assert ratings.attempts == 6


def test_a_rating_that_never_applies_is_503(deps: logic.PipelineDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logic.time, "sleep", lambda _: None)
    pipeline_id = _create(deps, [TEXT]).pipeline_id
    deps.ratings.outcomes = [RatingOutcome.CHANGED] * logic.RATING_ATTEMPTS  # type: ignore[attr-defined]
    with pytest.raises(ServiceUnavailable):
        logic.rate_pipeline(pipeline_id, "bob", 3, deps)


def test_rating_a_pipeline_deleted_meanwhile_is_404(deps: logic.PipelineDeps) -> None:
    pipeline_id = _create(deps, [TEXT]).pipeline_id
    deps.ratings.outcomes = [RatingOutcome.PIPELINE_GONE]  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        logic.rate_pipeline(pipeline_id, "bob", 3, deps)
    with pytest.raises(NotFound):
        logic.rate_pipeline("not a valid id!", "bob", 3, deps)
