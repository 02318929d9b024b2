"""The Python client against an in-memory API: retries, errors, token refresh, pagination, uploads, waiting."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagehub_cli.client import ApiError, ApiUnreachable, StagehubClient, output_filename
from stagehub_cli.tokens import FileTokenStore, MemoryTokenStore, Tokens
from tests.unit.cli.fake_api import BASE_URL, PNG_1X1, FakeApi

PASSWORD = "correct horse battery"
STAGES = [{"type": "txt2img", "inline": True, "body": "a fox", "parameters": {"steps": 2}}]


def logged_in(api: FakeApi, email: str = "alice@example.com", **kwargs: Any) -> StagehubClient:
    client = api.client(**kwargs)
    client.register(email, PASSWORD)
    client.login(email, PASSWORD)
    return client


def test_login_keeps_the_pair_in_the_token_store_and_sends_the_bearer() -> None:
    api = FakeApi()
    store = MemoryTokenStore()
    client = api.client(token_store=store)
    client.register("Alice@Example.com", PASSWORD, "Alice")
    client.login("Alice@Example.com", PASSWORD)

    assert store.tokens is not None
    assert store.tokens.access_token == client.access_token
    assert store.tokens.email == "alice@example.com"
    assert client.me()["displayName"] == "Alice"
    assert api.requests[-1].headers["Authorization"] == f"Bearer {client.access_token}"
    # A new client on the same store starts logged in.
    assert api.client(token_store=store).me()["email"] == "alice@example.com"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_get_is_retried_on_transient_statuses_then_succeeds(status: int) -> None:
    api = FakeApi()
    sleeps: list[float] = []
    client = logged_in(api, sleep=sleeps.append)
    api.fail_next = [status, status]

    assert client.list_pipelines()["items"] == []
    assert api.seen("GET", "/pipelines") == 3
    assert len(sleeps) == 2
    assert sleeps[1] >= sleeps[0] * 0.5 > 0


def test_retry_after_header_sets_the_wait() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "3"}, json={"code": "THROTTLED", "message": "x"})])
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"status": "ok"}))

    client = StagehubClient(BASE_URL, transport=httpx.MockTransport(handler), sleep=sleeps.append)
    assert client.health() == {"status": "ok"}
    assert sleeps == [3.0]


def test_retries_give_up_after_max_retries_with_the_last_error() -> None:
    api = FakeApi()
    client = logged_in(api, max_retries=2)
    api.fail_next = [503, 503, 503, 503]

    with pytest.raises(ApiError) as raised:
        client.get_pipeline("p")
    assert (raised.value.status, raised.value.code) == (503, "SERVICE_UNAVAILABLE")
    assert api.seen("GET", "/pipelines/p") == 3


def test_post_without_idempotency_key_is_not_retried() -> None:
    api = FakeApi()
    client = logged_in(api)
    api.fail_next = [503]

    with pytest.raises(ApiError) as raised:
        client.create_pipeline("fox", STAGES)
    assert raised.value.status == 503
    assert api.seen("POST", "/pipelines") == 1
    assert api.pipelines == {}


def test_run_sends_a_fresh_idempotency_key_and_is_retried_under_it() -> None:
    api = FakeApi()
    client = logged_in(api)
    pipeline = client.create_pipeline("fox", STAGES)
    api.fail_next = [503]

    execution = client.run(pipeline["pipelineId"], {"subject": "fox"}, "gpu-fleet", {0: {"steps": 4}})

    posts = [r for r in api.requests if r.method == "POST" and r.url.path.endswith("/executions")]
    assert len(posts) == 2
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    assert len(api.executions) == 1
    assert api.executions[execution["executionId"]]["request"] == {
        "variables": {"subject": "fox"},
        "backend": "gpu-fleet",
        "parameters": {"0": {"steps": 4}},
    }
    second = client.run(pipeline["pipelineId"])
    assert second["executionId"] != execution["executionId"]  # each run gets its own key


def test_run_with_the_same_idempotency_key_answers_the_same_execution() -> None:
    api = FakeApi()
    client = logged_in(api)
    pipeline = client.create_pipeline("fox", STAGES)
    first = client.run(pipeline["pipelineId"], idempotency_key="k-1")
    again = client.run(pipeline["pipelineId"], idempotency_key="k-1")
    assert first["executionId"] == again["executionId"]
    assert len(api.executions) == 1


def test_connection_refused_is_retried_for_any_method_then_reported() -> None:
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    client = StagehubClient(BASE_URL, transport=httpx.MockTransport(refuse), sleep=lambda _s: None, max_retries=3)
    with pytest.raises(ApiUnreachable, match="connection refused"):
        client.login("a@example.com", PASSWORD)
    assert len(calls) == 4


def test_read_timeout_on_a_post_without_key_is_not_retried() -> None:
    calls = []

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    client = StagehubClient(BASE_URL, access_token="t", transport=httpx.MockTransport(slow), sleep=lambda _s: None)
    with pytest.raises(ApiUnreachable):
        client.create_pipeline("fox", STAGES)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (404, {"code": "NOT_FOUND", "message": "pipeline not found"}, "NOT_FOUND", "pipeline not found"),
        (409, {"code": "CONFLICT", "message": "already final"}, "CONFLICT", "already final"),
        (403, {"code": "FORBIDDEN", "message": "author only"}, "FORBIDDEN", "author only"),
        (400, {"code": "BAD_REQUEST", "message": "bad cursor"}, "BAD_REQUEST", "bad cursor"),
    ],
)
def test_api_errors_carry_status_code_and_message(status: int, body: dict[str, str], code: str, message: str) -> None:
    client = StagehubClient(BASE_URL, transport=httpx.MockTransport(lambda _r: httpx.Response(status, json=body)))
    with pytest.raises(ApiError) as raised:
        client.get_pipeline("p")
    assert (raised.value.status, raised.value.code, raised.value.message, raised.value.details) == (
        status,
        code,
        message,
        None,
    )


def test_validation_error_keeps_its_details() -> None:
    api = FakeApi()
    with pytest.raises(ApiError) as raised:
        api.client().register("a@example.com", "short")
    assert raised.value.status == 422
    assert raised.value.code == "VALIDATION_FAILED"
    assert raised.value.details == [{"loc": ["body", "password"], "message": "too short"}]


def test_a_body_that_is_not_the_api_error_shape_still_raises_api_error() -> None:
    page = httpx.Response(500, text="<html><body>Internal   Server Error</body></html>")
    client = StagehubClient(BASE_URL, transport=httpx.MockTransport(lambda _r: page))
    with pytest.raises(ApiError) as raised:
        client.me()
    assert (raised.value.status, raised.value.code) == (500, "HTTP_500")
    assert "Internal Server Error" in raised.value.message


def test_a_401_refreshes_once_persists_the_new_pair_and_replays() -> None:
    api = FakeApi()
    store = MemoryTokenStore()
    client = logged_in(api, token_store=store)
    old_refresh = client.refresh_token
    api.expire_access_tokens()

    assert client.me()["email"] == "alice@example.com"
    assert api.seen("POST", "/auth/refresh") == 1
    assert client.refresh_token != old_refresh
    assert store.tokens == Tokens(client.access_token or "", client.refresh_token, "alice@example.com")
    assert api.seen("GET", "/users/me") == 2


def test_a_401_after_refresh_is_raised_not_looped() -> None:
    api = FakeApi()
    client = logged_in(api)
    api.expire_access_tokens()
    api.refresh.clear()  # the refresh token was revoked too

    with pytest.raises(ApiError) as raised:
        client.me()
    assert raised.value.status == 401
    assert api.seen("POST", "/auth/refresh") == 1
    assert api.seen("GET", "/users/me") == 1


def test_without_refresh_token_a_401_is_raised_directly() -> None:
    api = FakeApi()
    client = api.client()
    with pytest.raises(ApiError) as raised:
        client.me()
    assert raised.value.status == 401
    assert api.seen("POST", "/auth/refresh") == 0


def test_concurrent_401s_refresh_only_once() -> None:
    """Refresh tokens are single-use: two threads refreshing with the same one would revoke the session."""
    api = FakeApi()
    client = logged_in(api)
    api.expire_access_tokens()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.me()
        except BaseException as caught:  # pragma: no cover - reported below
            errors.append(caught)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert api.seen("POST", "/auth/refresh") == 1


def test_logout_revokes_on_the_server_and_clears_the_store() -> None:
    api = FakeApi()
    store = MemoryTokenStore()
    client = logged_in(api, token_store=store)
    refresh = client.refresh_token
    client.logout()
    assert store.tokens is None
    assert refresh not in api.refresh
    assert client.access_token is None


def test_pages_and_the_iterator_over_all_pages() -> None:
    api = FakeApi()
    client = logged_in(api)
    created = [client.create_pipeline(f"p{i}", STAGES)["pipelineId"] for i in range(5)]

    first = client.list_pipelines(limit=2)
    assert [item["pipelineId"] for item in first["items"]] == created[::-1][:2]
    assert first["nextCursor"]
    second = client.list_pipelines(limit=2, cursor=first["nextCursor"])
    assert [item["pipelineId"] for item in second["items"]] == created[::-1][2:4]
    assert [item["pipelineId"] for item in client.iter_pipelines(page_size=2)] == created[::-1]
    assert api.requests[-1].url.params["limit"] == "2"


def test_pipeline_rating_and_delete_round_trip() -> None:
    api = FakeApi()
    alice = logged_in(api)
    bob = logged_in(api, "bob@example.com")
    pipeline = alice.create_pipeline("fox", STAGES, "a fox")

    assert bob.rate(pipeline["pipelineId"], 4) == {"average": 4.0, "count": 1, "mine": 4}
    assert alice.get_rating(pipeline["pipelineId"])["mine"] is None
    assert [p["pipelineId"] for p in alice.user_pipelines()["items"]] == [pipeline["pipelineId"]]
    with pytest.raises(ApiError) as raised:
        bob.delete_pipeline(pipeline["pipelineId"])
    assert raised.value.status == 403
    alice.delete_pipeline(pipeline["pipelineId"])
    with pytest.raises(ApiError) as raised:
        alice.get_pipeline(pipeline["pipelineId"])
    assert raised.value.status == 404


def test_path_segments_are_escaped() -> None:
    api = FakeApi()
    client = logged_in(api)
    with pytest.raises(ApiError):
        client.get_pipeline("../users/me")
    assert api.requests[-1].url.raw_path == b"/pipelines/..%2Fusers%2Fme"


def test_upload_file_puts_the_bytes_to_the_presigned_url_without_the_bearer(tmp_path: Path) -> None:
    api = FakeApi()
    client = logged_in(api)
    image = tmp_path / "in.png"
    image.write_bytes(PNG_1X1)

    uri = client.upload_file(image)

    assert uri.startswith("s3://uploads/uploads/")
    create, put = api.requests[-2], api.requests[-1]
    assert create.url.path == "/uploads"
    assert create.read() == b'{"contentType":"image/png","sizeBytes":' + str(len(PNG_1X1)).encode() + b"}"
    assert put.method == "PUT"
    assert put.url.host == "blobs.test"
    assert put.headers["Content-Type"] == "image/png"
    assert "Authorization" not in put.headers
    assert api.blobs[uri.removeprefix("s3://uploads")] == PNG_1X1


def test_wait_reports_progress_until_final_and_results_download(tmp_path: Path) -> None:
    api = FakeApi()
    sleeps: list[float] = []
    client = logged_in(api, sleep=sleeps.append)
    pipeline = client.create_pipeline("fox", STAGES)
    execution = client.run(pipeline["pipelineId"])
    seen: list[tuple[str, int | None]] = []

    final = client.wait(
        execution["executionId"],
        on_progress=lambda e: seen.append((e["status"], (e["progress"] or {}).get("percent"))),
        poll_interval=0.25,
    )

    assert final["status"] == "SUCCEEDED"
    assert seen == [("QUEUED", None), ("RUNNING", 25), ("RUNNING", 75), ("SUCCEEDED", 100)]
    assert sleeps == [0.25, 0.25, 0.25]
    files = client.download_results(execution["executionId"], tmp_path / "out")
    assert [f.name for f in files] == ["stage0-0.txt", "stage1-0.png"]
    assert files[0].read_text() == "a red fox"
    assert files[1].read_bytes() == PNG_1X1
    image_get = api.requests[-1]
    assert image_get.url.host == "blobs.test"
    assert "Authorization" not in image_get.headers


def test_wait_stops_at_a_failure_and_times_out_when_asked() -> None:
    api = FakeApi(script=[("QUEUED", None), ("FAILED", None)], final_error={"code": "OUT_OF_MEMORY", "message": "oom"})
    client = logged_in(api)
    pipeline = client.create_pipeline("fox", STAGES)
    failed = client.wait(client.run(pipeline["pipelineId"])["executionId"])
    assert failed["status"] == "FAILED"
    assert failed["error"] == {"code": "OUT_OF_MEMORY", "message": "oom"}

    stuck = FakeApi(script=[("QUEUED", None)])
    client = logged_in(stuck)
    execution = client.run(client.create_pipeline("fox", STAGES)["pipelineId"])
    with pytest.raises(TimeoutError):
        client.wait(execution["executionId"], timeout=0)


def test_results_of_an_unfinished_execution_raise_conflict(tmp_path: Path) -> None:
    api = FakeApi()
    client = logged_in(api)
    execution = client.run(client.create_pipeline("fox", STAGES)["pipelineId"])
    with pytest.raises(ApiError) as raised:
        client.download_results(execution["executionId"], tmp_path)
    assert raised.value.status == 409


def test_cancel_is_not_retried_and_executions_filter_by_status() -> None:
    api = FakeApi()
    client = logged_in(api)
    pipeline = client.create_pipeline("fox", STAGES)
    queued = client.run(pipeline["pipelineId"])
    other = client.run(pipeline["pipelineId"])
    api.fail_next = [503]
    with pytest.raises(ApiError):
        client.cancel(queued["executionId"])
    assert client.cancel(queued["executionId"])["status"] == "CANCELLED"
    assert [e["executionId"] for e in client.list_executions(status="CANCELLED")["items"]] == [queued["executionId"]]
    assert api.requests[-1].url.params["status"] == "CANCELLED"
    listed = [e["executionId"] for e in client.iter_pipeline_executions(pipeline["pipelineId"], page_size=1)]
    assert listed == [other["executionId"], queued["executionId"]]
    client.delete_execution(other["executionId"])
    with pytest.raises(ApiError) as raised:
        client.get_execution(other["executionId"])
    assert raised.value.status == 404


def test_output_filenames() -> None:
    assert output_filename({"stage": 2, "index": 1, "type": "image", "contentType": "image/jpeg"}) == "stage2-1.jpg"
    assert output_filename({"stage": 0, "index": 0, "type": "text", "contentType": "text/markdown"}) == "stage0-0.txt"


def test_file_token_store_is_0600_in_a_0700_dir_and_keyed_by_api_url(tmp_path: Path) -> None:
    directory = tmp_path / "config" / "stagehub"
    local = FileTokenStore(directory, "http://127.0.0.1:8000/")
    remote = FileTokenStore(directory, "https://api.example.com")
    local.save(Tokens("a1", "r1", "alice@example.com"))
    remote.save(Tokens("a2", "r2"))

    assert stat.S_IMODE(local.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert FileTokenStore(directory, "http://127.0.0.1:8000").load() == Tokens("a1", "r1", "alice@example.com")
    assert remote.load() == Tokens("a2", "r2")
    local.clear()
    assert local.load() is None
    assert remote.load() == Tokens("a2", "r2")
    assert [p.name for p in directory.iterdir()] == ["tokens.json"]  # no temporary files left


def test_file_token_store_tightens_a_loose_existing_file(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path, "http://api.test")
    store.path.write_text("{}")
    store.path.chmod(0o644)
    store.save(Tokens("a", "r"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_file_token_store_survives_a_corrupt_file(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path, "http://api.test")
    store.path.write_text("not json")
    assert store.load() is None
    store.save(Tokens("a", None))
    assert store.load() == Tokens("a", None, None)
