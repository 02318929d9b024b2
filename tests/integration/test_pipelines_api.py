"""The pipelines API over HTTP on the local gateway (API.md, "Pipelines"): create, read, list, delete, ratings and
the stage types."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from shared.settings import Settings
from tests.integration.executions_support import private_queues

if TYPE_CHECKING:
    from tests.integration.conftest import TestUser

PIPELINE_KEYS = {"pipelineId", "name", "description", "author", "authorName", "createdAt", "stages", "rating"}
SUMMARY_KEYS = {"pipelineId", "name", "description", "author", "authorName", "createdAt", "stageCount", "rating"}
STAGE_KEYS = {"type", "inline", "body", "parameters"}
NO_RATING = {"average": None, "count": 0, "mine": None}

TXT2TXT = {"type": "txt2txt", "inline": True, "body": "write a prompt about {{subject}}", "parameters": {"topP": 0.9}}
TXT2IMG = {"type": "txt2img", "inline": True, "body": "{{previous}}", "parameters": {"steps": 4, "width": 64}}
IMG2IMG = {"type": "img2img", "inline": True, "body": "in watercolour", "parameters": {"strength": 0.5}}

Users = Callable[..., "TestUser"]


def _pipeline(name: str = "fox pictures", stages: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "a fox, then its picture", "stages": stages or [TXT2TXT, TXT2IMG]} | extra


def _create(api: httpx.Client, user: TestUser, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post("/pipelines", json=body or _pipeline(), headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _upload(api: httpx.Client, user: TestUser, data: bytes = b"a long prompt", put: bool = True) -> str:
    """An s3:// URI from POST /uploads, with its bytes PUT to the presigned URL unless `put` is false."""
    response = api.post("/uploads", json={"contentType": "text/plain", "sizeBytes": len(data)}, headers=user.headers)
    assert response.status_code == 201, response.text
    if put:
        stored = httpx.put(response.json()["uploadUrl"], content=data, headers={"Content-Type": "text/plain"})
        assert stored.status_code == 200, stored.text
    return response.json()["uri"]  # type: ignore[no-any-return]


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    if code:
        assert body["code"] == code
    return body


def _pages(api: httpx.Client, user: TestUser, path: str, limit: int, stop_after: int | None = None) -> list[dict]:
    """Every item of a list, following nextCursor page by page; `stop_after` items is enough."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        response = api.get(path, params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "nextCursor"}
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["nextCursor"]
        if cursor is None or (stop_after is not None and len(items) >= stop_after):
            return items
        assert page["items"], "a page with a cursor has items"


# --- create and read ---


def test_create_answers_201_with_the_full_pipeline(api: httpx.Client, new_user: Users) -> None:
    user = new_user("Ada")
    pipeline = _create(api, user)
    assert set(pipeline) == PIPELINE_KEYS
    uuid.UUID(pipeline["pipelineId"])
    assert pipeline["name"] == "fox pictures"
    assert pipeline["description"] == "a fox, then its picture"
    assert pipeline["author"] == user.user_id
    assert pipeline["authorName"] == "Ada"
    assert pipeline["createdAt"].endswith("Z")
    assert pipeline["rating"] == NO_RATING
    assert [set(stage) for stage in pipeline["stages"]] == [STAGE_KEYS, STAGE_KEYS]
    assert pipeline["stages"] == [TXT2TXT, TXT2IMG]

    fetched = api.get(f"/pipelines/{pipeline['pipelineId']}", headers=user.headers)
    assert fetched.status_code == 200
    assert fetched.json() == pipeline
    # Any user may read it.
    assert api.get(f"/pipelines/{pipeline['pipelineId']}", headers=new_user().headers).json() == pipeline


def test_the_server_sets_the_author(api: httpx.Client, new_user: Users) -> None:
    user, someone = new_user(), new_user()
    response = api.post("/pipelines", json=_pipeline(author=someone.user_id), headers=user.headers)
    # Either rejected or ignored: never stored with the client's author.
    if response.status_code == 201:
        assert response.json()["author"] == user.user_id
    else:
        _error(response, 422)
    assert _pages(api, someone, "/users/me/pipelines", 100) == []


def test_stage_defaults_and_every_stage_type_are_accepted(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    stages = [{"type": "txt2txt", "body": "hello"}, TXT2IMG, IMG2IMG]
    pipeline = _create(api, user, {"name": "n", "stages": stages})
    assert pipeline["description"] == ""
    assert pipeline["stages"][0] == {"type": "txt2txt", "inline": True, "body": "hello", "parameters": {}}
    assert [s["type"] for s in pipeline["stages"]] == ["txt2txt", "txt2img", "img2img"]


def test_limits_are_inclusive(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    at_the_limits = {
        "name": "n" * 100,
        "description": "d" * 2000,
        "stages": [{"type": "txt2txt", "inline": True, "body": "p" * 16384, "parameters": {}}] * 16,
    }
    pipeline = _create(api, user, at_the_limits)
    assert len(pipeline["stages"]) == 16
    params: dict[str, Any] = {"steps": 150, "guidanceScale": 30, "width": 1024, "height": 64, "numImages": 4, "seed": 0}
    _create(api, user, _pipeline(stages=[{"type": "txt2img", "inline": True, "body": "x", "parameters": params}]))
    params = {"strength": 1, "steps": 1, "guidanceScale": 0, "negativePrompt": "blurry", "model": "sd"}
    _create(api, user, _pipeline(stages=[{"type": "img2img", "inline": True, "body": "x", "parameters": params}]))
    params = {"maxNewTokens": 2048, "temperature": 2, "topP": 0, "seed": 7}
    _create(api, user, _pipeline(stages=[{"type": "txt2txt", "inline": True, "body": "x", "parameters": params}]))


def _stage(**changes: Any) -> dict[str, Any]:
    return {"type": "txt2img", "inline": True, "body": "a fox", "parameters": {}} | changes


INVALID_PIPELINES: dict[str, dict[str, Any]] = {
    "unknown-type": _pipeline(stages=[_stage(type="txt2video")]),
    "no-type": _pipeline(stages=[{"inline": True, "body": "x"}]),
    "unknown-parameter": _pipeline(stages=[_stage(parameters={"bogus": 1})]),
    "other-types-parameter": _pipeline(stages=[_stage(parameters={"temperature": 0.5})]),
    "steps-0": _pipeline(stages=[_stage(parameters={"steps": 0})]),
    "steps-151": _pipeline(stages=[_stage(parameters={"steps": 151})]),
    "guidance-31": _pipeline(stages=[_stage(parameters={"guidanceScale": 30.5})]),
    "width-not-multiple-of-8": _pipeline(stages=[_stage(parameters={"width": 100})]),
    "height-1032": _pipeline(stages=[_stage(parameters={"height": 1032})]),
    "height-56": _pipeline(stages=[_stage(parameters={"height": 56})]),
    "num-images-5": _pipeline(stages=[_stage(parameters={"numImages": 5})]),
    "strength-above-1": _pipeline(stages=[_stage(type="img2img", parameters={"strength": 1.5})]),
    "temperature-above-2": _pipeline(stages=[_stage(type="txt2txt", parameters={"temperature": 2.1})]),
    "top-p-negative": _pipeline(stages=[_stage(type="txt2txt", parameters={"topP": -0.1})]),
    "max-new-tokens-2049": _pipeline(stages=[_stage(type="txt2txt", parameters={"maxNewTokens": 2049})]),
    "steps-not-a-number": _pipeline(stages=[_stage(parameters={"steps": "many"})]),
    "no-stages": _pipeline(stages=[]) | {"stages": []},
    "17-stages": _pipeline(stages=[_stage()] * 17),
    "empty-name": _pipeline(name=""),
    "long-name": _pipeline(name="n" * 101),
    "no-name": {"stages": [_stage()]},
    "long-description": _pipeline(description="d" * 2001),
    # Text limits count UTF-8 bytes: 51 two-byte characters are 102 bytes.
    "long-name-in-bytes": _pipeline(name="é" * 51),
    "long-description-in-bytes": _pipeline(description="é" * 1001),
    "long-inline-prompt": _pipeline(stages=[_stage(body="p" * 16385)]),
    # 16 KiB counts UTF-8 bytes: 6000 two-byte characters are 12000 bytes, 9000 are 18000.
    "long-inline-prompt-in-bytes": _pipeline(stages=[_stage(body="é" * 9000)]),
    "non-upload-uri": _pipeline(stages=[_stage(inline=False, body="https://example.com/prompt.txt")]),
    "uri-in-another-bucket": _pipeline(stages=[_stage(inline=False, body="s3://some-bucket/uploads/x/prompt.txt")]),
    "unknown-stage-field": _pipeline(stages=[_stage(extra=1)]),
    # The whole chain (API.md, "Limits, fairness and hostile input").
    "previous-in-the-first-stage": _pipeline(stages=[_stage(body="{{previous}}")]),
    "previous-after-an-image-stage": _pipeline(stages=[_stage(), _stage(type="img2img", body="{{previous}}")]),
    "scheduler-not-allowed": _pipeline(stages=[_stage(parameters={"scheduler": "__init__"})]),
    "steps-true": _pipeline(stages=[_stage(parameters={"steps": True})]),
    "guidance-false": _pipeline(stages=[_stage(parameters={"guidanceScale": False})]),
    "top-p-true": _pipeline(stages=[_stage(type="txt2txt", parameters={"topP": True})]),
}


def test_invalid_pipelines_are_422_and_create_nothing(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    wrong = {}
    for case, request_body in INVALID_PIPELINES.items():
        response = api.post("/pipelines", json=request_body, headers=user.headers)
        body = response.json()
        if (response.status_code, body.get("code")) != (422, "VALIDATION_FAILED") or not body.get("details"):
            wrong[case] = (response.status_code, body)
    assert wrong == {}
    assert _pages(api, user, "/users/me/pipelines", 100) == []


def test_text_limits_count_utf8_bytes(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    _create(api, user, _pipeline(stages=[_stage(body="é" * 8192)]))  # 16384 bytes: at the limit
    created = _create(api, user, _pipeline(name="é" * 50, description="é" * 1000))  # 100 and 2000 bytes
    assert created["name"] == "é" * 50


def test_malformed_json_is_400(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    headers = user.headers | {"Content-Type": "application/json"}
    _error(api.post("/pipelines", content="{oops", headers=headers), 400, "BAD_REQUEST")


def test_an_own_upload_may_be_a_stage_body(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    uri = _upload(api, user)
    pipeline = _create(api, user, _pipeline(stages=[_stage(inline=False, body=uri)]))
    assert pipeline["stages"][0]["inline"] is False
    assert pipeline["stages"][0]["body"] == uri


def test_an_upload_of_another_user_is_422(api: httpx.Client, new_user: Users) -> None:
    owner, thief = new_user(), new_user()
    uri = _upload(api, owner)
    response = api.post("/pipelines", json=_pipeline(stages=[_stage(inline=False, body=uri)]), headers=thief.headers)
    body = _error(response, 422, "VALIDATION_FAILED")
    assert ["body", "stages", 0, "body"] in [d["loc"] for d in body["details"]]


def test_an_upload_not_yet_uploaded_is_422(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    uri = _upload(api, user, put=False)
    response = api.post("/pipelines", json=_pipeline(stages=[_stage(inline=False, body=uri)]), headers=user.headers)
    _error(response, 422, "VALIDATION_FAILED")


def test_own_prefix_but_not_an_upload_of_the_server_is_422(
    api: httpx.Client, new_user: Users, stack_env: Settings
) -> None:
    user = new_user()
    uri = f"s3://{stack_env.uploads_bucket}/uploads/{user.user_id}/{uuid.uuid4()}.txt"
    response = api.post("/pipelines", json=_pipeline(stages=[_stage(inline=False, body=uri)]), headers=user.headers)
    _error(response, 422, "VALIDATION_FAILED")


@pytest.mark.parametrize("pipeline_id", [str(uuid.uuid4()), "not-a-uuid", "x" * 300])
def test_unknown_pipeline_is_404(api: httpx.Client, new_user: Users, pipeline_id: str) -> None:
    user = new_user()
    for method, path in [
        ("GET", f"/pipelines/{pipeline_id}"),
        ("DELETE", f"/pipelines/{pipeline_id}"),
        ("GET", f"/pipelines/{pipeline_id}/rating"),
    ]:
        _error(api.request(method, path, headers=user.headers), 404, "NOT_FOUND")
    _error(api.put(f"/pipelines/{pipeline_id}/rating", json={"score": 3}, headers=user.headers), 404, "NOT_FOUND")


# --- lists ---


def test_a_users_pipelines_page_by_opaque_cursor_newest_first(api: httpx.Client, new_user: Users) -> None:
    author, reader = new_user("Lister"), new_user()
    created = [_create(api, author, _pipeline(name=f"p{i}")) for i in range(4)]
    _create(api, reader)  # someone else's: never in the author's list

    items = _pages(api, reader, f"/users/{author.user_id}/pipelines", limit=1)
    ids = [item["pipelineId"] for item in items]
    assert len(ids) == len(set(ids)) == 4
    assert ids == [p["pipelineId"] for p in reversed(created)]
    assert [item["createdAt"] for item in items] == sorted((item["createdAt"] for item in items), reverse=True)
    first = items[-1]
    assert set(first) == SUMMARY_KEYS
    assert first == {k: v for k, v in created[0].items() if k != "stages"} | {"stageCount": 2}
    assert first["authorName"] == "Lister"

    # `me` is the caller; bigger pages give the same order.
    assert [i["pipelineId"] for i in _pages(api, author, "/users/me/pipelines", limit=3)] == ids
    assert [i["pipelineId"] for i in _pages(api, author, f"/users/{author.user_id}/pipelines", limit=100)] == ids


def test_all_pipelines_list_pages_without_duplicates(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    created = [_create(api, user, _pipeline(name=f"all-{i}"))["pipelineId"] for i in range(3)]
    items = _pages(api, user, "/pipelines", limit=1, stop_after=3)
    ids = [item["pipelineId"] for item in items]
    assert ids == list(reversed(created))  # the newest pipelines of the whole system come first
    assert all(set(item) == SUMMARY_KEYS for item in items)

    everything = [item["pipelineId"] for item in _pages(api, user, "/pipelines", limit=100)]
    assert len(everything) == len(set(everything))
    assert everything[:3] == ids


def test_the_default_page_is_20(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    for i in range(21):
        _create(api, user, _pipeline(name=f"d{i}", stages=[{"type": "txt2txt", "body": "x"}]))
    page = api.get("/users/me/pipelines", headers=user.headers).json()
    assert len(page["items"]) == 20
    assert page["nextCursor"]
    rest = api.get("/users/me/pipelines", params={"cursor": page["nextCursor"]}, headers=user.headers).json()
    assert len(rest["items"]) == 1
    assert rest["nextCursor"] is None


def test_an_unknown_user_has_an_empty_list(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    for who in (str(uuid.uuid4()), "nobody"):
        response = api.get(f"/users/{who}/pipelines", headers=user.headers)
        assert response.status_code == 200
        assert response.json() == {"items": [], "nextCursor": None}


BAD_LIST_QUERIES: list[tuple[dict[str, str], int]] = [
    ({"limit": "0"}, 422),
    ({"limit": "101"}, 422),
    ({"limit": "-1"}, 422),
    ({"limit": "ten"}, 422),
    ({"limit": "2.5"}, 422),
    ({"cursor": "not-a-cursor"}, 400),
    ({"cursor": "eyJhIjogMX0="}, 400),  # {"a": 1}: well formed, never issued
    ({"cursor": "W10="}, 400),  # []
]


def test_bad_list_queries(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    wrong = []
    for path in ("/pipelines", "/users/me/pipelines", f"/users/{uuid.uuid4()}/pipelines"):
        for params, status in BAD_LIST_QUERIES:
            response = api.get(path, params=params, headers=user.headers)
            if response.status_code != status or "code" not in response.json():
                wrong.append((path, params, response.status_code, response.text))
    assert wrong == []


def test_a_cursor_of_another_list_is_400(api: httpx.Client, new_user: Users) -> None:
    author, other = new_user(), new_user()
    for _ in range(2):
        _create(api, author)
    _create(api, other)
    by_author = api.get("/users/me/pipelines", params={"limit": "1"}, headers=author.headers).json()["nextCursor"]
    everyone = api.get("/pipelines", params={"limit": "1"}, headers=author.headers).json()["nextCursor"]
    assert by_author
    assert everyone
    _error(api.get("/users/me/pipelines", params={"cursor": by_author}, headers=other.headers), 400)
    _error(api.get("/pipelines", params={"cursor": by_author}, headers=author.headers), 400)
    _error(api.get("/users/me/pipelines", params={"cursor": everyone}, headers=author.headers), 400)


def test_limit_bounds_are_inclusive(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    for limit in ("1", "100"):
        assert api.get("/pipelines", params={"limit": limit}, headers=user.headers).status_code == 200


# --- delete ---


def test_only_the_author_may_delete_then_it_is_gone(api: httpx.Client, new_user: Users) -> None:
    author, other = new_user(), new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    assert api.put(f"/pipelines/{pipeline_id}/rating", json={"score": 4}, headers=other.headers).status_code == 200

    _error(api.delete(f"/pipelines/{pipeline_id}", headers=other.headers), 403, "FORBIDDEN")
    assert api.get(f"/pipelines/{pipeline_id}", headers=other.headers).status_code == 200

    response = api.delete(f"/pipelines/{pipeline_id}", headers=author.headers)
    assert response.status_code == 204
    assert response.content == b""
    for user in (author, other):
        _error(api.get(f"/pipelines/{pipeline_id}", headers=user.headers), 404, "NOT_FOUND")
        _error(api.get(f"/pipelines/{pipeline_id}/rating", headers=user.headers), 404, "NOT_FOUND")
    _error(api.delete(f"/pipelines/{pipeline_id}", headers=author.headers), 404, "NOT_FOUND")
    assert _pages(api, author, "/users/me/pipelines", 100) == []
    assert pipeline_id not in [i["pipelineId"] for i in _pages(api, author, "/pipelines", 100)]


def test_executions_of_a_deleted_pipeline_keep_working(
    api: httpx.Client, new_user: Users, stack_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_queues(stack_env, monkeypatch)  # the execution's message goes to a queue of this test's own
    author, runner = new_user(), new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    submitted = api.post(
        f"/pipelines/{pipeline_id}/executions", json={"variables": {"subject": "a fox"}}, headers=runner.headers
    )
    assert submitted.status_code == 202, submitted.text
    execution_id = submitted.json()["executionId"]

    assert api.delete(f"/pipelines/{pipeline_id}", headers=author.headers).status_code == 204
    execution = api.get(f"/executions/{execution_id}", headers=runner.headers)
    assert execution.status_code == 200
    assert execution.json()["pipelineId"] == pipeline_id
    assert execution_id in [i["executionId"] for i in api.get("/executions", headers=runner.headers).json()["items"]]
    cancelled = api.post(f"/executions/{execution_id}/cancel", headers=runner.headers)
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "CANCELLED"
    # A deleted pipeline can no longer be run.
    resubmitted = api.post(f"/pipelines/{pipeline_id}/executions", json={}, headers=runner.headers)
    _error(resubmitted, 404, "NOT_FOUND")


# --- ratings ---


def _rate(api: httpx.Client, user: TestUser, pipeline_id: str, score: Any) -> httpx.Response:
    return api.put(f"/pipelines/{pipeline_id}/rating", json={"score": score}, headers=user.headers)


def test_one_rating_per_user_changeable_and_aggregated(api: httpx.Client, new_user: Users) -> None:
    author, alice, bob = new_user(), new_user(), new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    assert api.get(f"/pipelines/{pipeline_id}/rating", headers=alice.headers).json() == NO_RATING

    first = _rate(api, alice, pipeline_id, 4)
    assert first.status_code == 200, first.text
    assert first.json() == {"average": 4.0, "count": 1, "mine": 4}
    changed = _rate(api, alice, pipeline_id, 2)  # a change, not a second rating
    assert changed.json() == {"average": 2.0, "count": 1, "mine": 2}
    same = _rate(api, alice, pipeline_id, 2)
    assert same.json() == {"average": 2.0, "count": 1, "mine": 2}
    assert _rate(api, bob, pipeline_id, 5).json() == {"average": 3.5, "count": 2, "mine": 5}

    def rating_for(user: TestUser) -> dict[str, Any]:
        response = api.get(f"/pipelines/{pipeline_id}/rating", headers=user.headers)
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    assert rating_for(author) == {"average": 3.5, "count": 2, "mine": None}
    assert rating_for(alice) == {"average": 3.5, "count": 2, "mine": 2}
    assert rating_for(bob) == {"average": 3.5, "count": 2, "mine": 5}
    # The pipeline and the lists carry the same rating, with the caller's own score.
    assert api.get(f"/pipelines/{pipeline_id}", headers=alice.headers).json()["rating"] == rating_for(alice)
    (summary,) = _pages(api, bob, f"/users/{author.user_id}/pipelines", 100)
    assert summary["rating"] == rating_for(bob)


def test_rating_ones_own_pipeline_is_403(api: httpx.Client, new_user: Users) -> None:
    author = new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    _error(_rate(api, author, pipeline_id, 5), 403, "FORBIDDEN")
    assert api.get(f"/pipelines/{pipeline_id}/rating", headers=author.headers).json() == NO_RATING


def test_out_of_range_scores_are_422(api: httpx.Client, new_user: Users) -> None:
    author, rater = new_user(), new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    for score in [0, 6, -1, 4.5, "high", None, [5]]:
        _error(_rate(api, rater, pipeline_id, score), 422, "VALIDATION_FAILED")
    assert api.get(f"/pipelines/{pipeline_id}/rating", headers=rater.headers).json() == NO_RATING


def test_score_bounds_are_inclusive(api: httpx.Client, new_user: Users) -> None:
    author, low, high = new_user(), new_user(), new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    assert _rate(api, low, pipeline_id, 1).status_code == 200
    assert _rate(api, high, pipeline_id, 5).json() == {"average": 3.0, "count": 2, "mine": 5}


def test_a_rating_body_without_score_is_422(api: httpx.Client, new_user: Users) -> None:
    author, rater = new_user(), new_user()
    pipeline_id = _create(api, author)["pipelineId"]
    response = api.put(f"/pipelines/{pipeline_id}/rating", json={}, headers=rater.headers)
    _error(response, 422, "VALIDATION_FAILED")


# --- stage types ---


def test_stage_types_list_the_supported_types_with_parameters(api: httpx.Client, new_user: Users) -> None:
    response = api.get("/stage-types", headers=new_user().headers)
    assert response.status_code == 200
    types = {item["type"]: item for item in response.json()["items"]}
    assert set(types) == {"txt2txt", "txt2img", "img2img"}
    expected = {
        "txt2img": {"model", "steps", "guidanceScale", "width", "height", "seed", "negativePrompt", "scheduler"}
        | {"numImages"},
        "img2img": {"model", "strength", "steps", "guidanceScale", "seed", "negativePrompt"},
        "txt2txt": {"model", "maxNewTokens", "temperature", "topP", "seed"},
    }
    # API.md, "Models": LoRA adapters for the image types, a system prompt for instruct models.
    expected["txt2img"] |= {"loras"}
    expected["img2img"] |= {"loras"}
    expected["txt2txt"] |= {"system"}
    for name, item in types.items():
        assert set(item["parameters"]["properties"]) == expected[name], name
        assert item["description"]
        assert item["output"] in {"text", "image"}
    steps = types["txt2img"]["parameters"]["properties"]["steps"]
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (1, 150, 25)
    tokens = types["txt2txt"]["parameters"]["properties"]["maxNewTokens"]
    assert (tokens["minimum"], tokens["maximum"]) == (1, 2048)
    strength = types["img2img"]["parameters"]["properties"]["strength"]
    assert (strength["minimum"], strength["maximum"]) == (0, 1)
    assert (types["txt2txt"]["output"], types["txt2img"]["output"]) == ("text", "image")
