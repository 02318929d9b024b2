"""Wait mode (one `Prefer: wait` request per window, polling where the server ignores it), the estimated queue
wait, `run --webhook`, the webhook signature verifier, and server text that must not act as markup or control
sequences in a terminal."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from stagehub_cli.client import StagehubClient, WebhookVerificationError, verify_webhook
from stagehub_cli.main import ExitCode, QueueEstimate, progress_description
from tests.unit.cli.fake_api import FakeApi
from tests.unit.cli.test_main import Cli

STAGES = [{"type": "txt2img", "inline": True, "body": "a fox", "parameters": {}}]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _client(api: FakeApi, sleeps: list[float]) -> StagehubClient:
    client = api.client(sleep=sleeps.append)
    client.register("a@example.com", "correct horse battery")
    client.login("a@example.com", "correct horse battery")
    return client


def _status_gets(api: FakeApi) -> list[str]:
    return [r.headers.get("Prefer", "") for r in api.requests if r.method == "GET" and "/executions/" in r.url.path]


def test_wait_makes_one_request_per_window_when_the_server_holds_answers() -> None:
    api, sleeps = FakeApi(honours_wait=True), list[float]()
    client = _client(api, sleeps)
    execution = client.run(client.create_pipeline("fox", STAGES)["pipelineId"])
    final = client.wait(execution["executionId"], wait_window=20)
    assert final["status"] == "SUCCEEDED"
    assert _status_gets(api) == ["wait=20"] * 4  # one per answer, no polling in between
    assert sleeps == []


def test_wait_falls_back_to_polling_when_the_server_ignores_the_header() -> None:
    api, sleeps = FakeApi(), list[float]()
    client = _client(api, sleeps)
    execution = client.run(client.create_pipeline("fox", STAGES)["pipelineId"])
    assert client.wait(execution["executionId"], poll_interval=0.5)["status"] == "SUCCEEDED"
    assert _status_gets(api) == ["wait=20"] * 4
    assert sleeps == [0.5, 0.5, 0.5]


def test_the_window_never_outlasts_the_timeout() -> None:
    api, sleeps = FakeApi(honours_wait=True, script=[("QUEUED", None)]), list[float]()
    client = _client(api, sleeps)
    execution = client.run(client.create_pipeline("fox", STAGES)["pipelineId"])
    with pytest.raises(TimeoutError):
        client.wait(execution["executionId"], timeout=3.5, wait_window=20)
    assert _status_gets(api)[0] in {"wait=3", "wait=2"}


def test_get_execution_with_wait_caps_it_at_25_s() -> None:
    api, sleeps = FakeApi(honours_wait=True), list[float]()
    client = _client(api, sleeps)
    execution = client.run(client.create_pipeline("fox", STAGES)["pipelineId"])
    client.get_execution(execution["executionId"], wait_s=90)
    assert _status_gets(api) == ["wait=25"]


def test_run_wait_says_what_it_waits_for_and_asks_backends_for_the_queue_estimate(tmp_path: Path) -> None:
    backends = [{"name": "gpu-fleet", "queued": 12, "running": 3, "workers": 2, "estimatedWaitSeconds": 40}]
    cli = Cli(FakeApi(honours_wait=True, backends=backends), tmp_path / "config")
    cli.login_as("a@example.com")
    result = cli("run", cli.create("txt2img.json"), "--wait", "--wait-window", "10")
    assert result.exit_code == 0, result.output
    assert "waiting for execution" in result.stderr
    assert "one request every 10 s at most" in result.stderr
    assert _status_gets(cli.api) == ["wait=10"] * 4
    assert cli.api.seen("GET", "/backends") == 1  # while QUEUED, at most once a minute


def test_a_server_without_backends_is_asked_once(tmp_path: Path) -> None:
    script: list[tuple[str, dict[str, int] | None]] = [("QUEUED", None), ("QUEUED", None), ("SUCCEEDED", None)]
    cli = Cli(FakeApi(script=script), tmp_path / "config")
    cli.login_as("a@example.com")
    result = cli("run", cli.create("txt2img.json"), "--wait", "--poll-interval", "0.05")
    assert result.exit_code == 0, result.output
    assert cli.api.seen("GET", "/backends") == 1


def test_queue_estimate_text_and_its_refresh() -> None:
    api = FakeApi(backends=[{"name": "gpu-fleet", "queued": 3, "workers": 1, "estimatedWaitSeconds": 150}])
    client = _client(api, [])
    now = [0.0]
    estimate = QueueEstimate(client, clock=lambda: now[0])
    queued = {"status": "QUEUED", "backend": "gpu-fleet", "progress": None}
    assert estimate.text(queued) == "about 2 min, 3 queued, 1 workers"
    assert progress_description(queued, estimate.text(queued)) == (
        "QUEUED: waiting for a gpu-fleet worker (about 2 min, 3 queued, 1 workers)"
    )
    now[0] = 61.0
    estimate.text(queued)
    assert api.seen("GET", "/backends") == 2
    running = {"status": "RUNNING", "progress": {"stage": 1, "stages": 2, "step": 3, "steps": 10}}
    assert estimate.text(running) is None
    assert progress_description(running) == "RUNNING stage 1/2 step 3/10: waiting for it to finish"


def test_run_sends_the_webhook_and_its_events(tmp_path: Path) -> None:
    cli = Cli(FakeApi(), tmp_path / "config")
    cli.login_as("a@example.com")
    pipeline_id = cli.create("txt2img.json")
    url = "https://hooks.example.com/in"
    result = cli(
        "--json", "run", pipeline_id, "--webhook", url, "--webhook-event", "started", "--webhook-event", "completed"
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)["request"]
    assert body["webhook"] == url
    assert body["webhookEvents"] == ["started", "completed"]
    assert cli("run", pipeline_id, "--webhook-event", "started").exit_code == ExitCode.USAGE
    assert cli("run", pipeline_id, "--webhook", url, "--webhook-event", "finished").exit_code == ExitCode.USAGE


# --- the signature verifier ---


def _signed(body: bytes, *, at: datetime | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers as the reference library signs them."""
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign("msg_1", at, body.decode())
    return {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(int(at.timestamp())), "Webhook-Signature": signature}


def test_the_verifier_accepts_what_the_reference_library_signs() -> None:
    body = json.dumps({"type": "execution.completed", "data": {"status": "SUCCEEDED"}}).encode()
    assert verify_webhook(SECRET, _signed(body), body)["type"] == "execution.completed"
    headers = _signed(body)
    headers["Webhook-Signature"] = "v1,bm9wZQ== v2,x " + headers["Webhook-Signature"]  # one of several
    assert verify_webhook(SECRET, headers, body.decode())["data"] == {"status": "SUCCEEDED"}


@pytest.mark.parametrize("tamper", ["body", "secret", "old", "missing", "garbage"])
def test_the_verifier_refuses_anything_else(tamper: str) -> None:
    body = b'{"type": "execution.completed"}'
    headers = _signed(body)
    secret = SECRET
    if tamper == "body":
        body = b'{"type": "execution.completed", "x": 1}'
    elif tamper == "secret":
        secret = "whsec_" + "A" * 32
    elif tamper == "old":
        headers = _signed(body, at=datetime.fromtimestamp(time.time() - 3600, UTC))
    elif tamper == "missing":
        del headers["Webhook-Id"]
    else:
        headers["Webhook-Signature"] = "v1,%%%"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body)


# --- server text in the terminal ---

HOSTILE_NAME = "harmless [/]"
HOSTILE_TEXT = "[link=https://evil.example]click[/link] [bold red]x\x1b[2J\x1b]8;;https://evil\x07\x9b31m\u202eevil"


def _hostile(cli: Cli) -> str:
    pipeline_id = cli.create("txt2img.json")
    pipeline = cli.api.pipelines[pipeline_id]
    pipeline.update(name=HOSTILE_NAME, description=HOSTILE_TEXT, authorName=HOSTILE_TEXT)
    pipeline["stages"][0]["body"] = HOSTILE_TEXT
    return pipeline_id


def _assert_inert(text: str) -> None:
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in text


def test_a_pipeline_named_like_markup_lists_and_shows_verbatim(alice: Cli) -> None:
    pipeline_id = _hostile(alice)
    listed = alice("pipelines", "list")
    assert listed.exit_code == 0, listed.output
    assert HOSTILE_NAME in listed.stdout
    _assert_inert(listed.output)
    shown = alice("pipelines", "show", pipeline_id)
    assert shown.exit_code == 0, shown.output
    assert "[link=https://evil.example]click[/link]" in shown.stdout  # printed as text, not made a link
    assert HOSTILE_NAME in shown.stdout
    _assert_inert(shown.output)


def test_execution_errors_and_api_errors_reach_the_terminal_inert(tmp_path: Path) -> None:
    api = FakeApi(script=[("FAILED", None)], final_error={"code": "BAD[/]", "message": HOSTILE_TEXT})
    cli = Cli(api, tmp_path / "config")
    cli.login_as("a@example.com")
    execution_id = json.loads(cli("--json", "run", cli.create("txt2img.json")).stdout)["executionId"]
    shown = cli("executions", "show", execution_id)
    assert shown.exit_code == 0, shown.output
    assert "error: BAD[/]: [link=https://evil.example]click[/link]" in shown.stdout
    _assert_inert(shown.output)
    waited = cli("executions", "wait", execution_id)
    assert waited.exit_code == ExitCode.EXECUTION_FAILED
    _assert_inert(waited.output)
    listed = cli("executions", "list")
    assert listed.exit_code == 0
    api.fail_next = [503] * 10
    failed = cli("executions", "list")
    assert failed.exit_code == ExitCode.API_ERROR
    _assert_inert(failed.output)


def test_json_output_keeps_the_text_and_escapes_its_controls(alice: Cli) -> None:
    pipeline_id = _hostile(alice)
    result = alice("--json", "pipelines", "show", pipeline_id)
    assert result.exit_code == 0
    _assert_inert(result.stdout)
    assert json.loads(result.stdout)["description"] == HOSTILE_TEXT


@pytest.fixture
def alice(tmp_path: Path) -> Cli:
    cli = Cli(FakeApi(), tmp_path / "config")
    cli.login_as("alice@example.com")
    return cli


def test_webhook_secret_and_rotation(alice: Cli) -> None:
    first = alice("webhook-secret")
    assert first.exit_code == 0, first.output
    secret = first.stdout.strip()
    assert secret.startswith("whsec_")
    assert alice("webhook-secret").stdout.strip() == secret
    rotated = json.loads(alice("--json", "webhook-secret", "--rotate").stdout)["secret"]
    assert rotated != secret


def test_executions_deliveries_lists_the_attempts(alice: Cli) -> None:
    execution_id = json.loads(alice("--json", "run", alice.create("txt2img.json")).stdout)["executionId"]
    attempt = {"webhookId": "msg_1", "type": "execution.completed", "at": "2026-12-01T00:00:00Z"}
    alice.api.deliveries[execution_id] = [
        attempt | {"attempt": 1, "status": None, "error": "no answer within 10 s [/]\x1b[2J"},
        attempt | {"attempt": 2, "status": 200, "error": None},
    ]
    listed = alice("executions", "deliveries", execution_id)
    assert listed.exit_code == 0, listed.output
    assert "msg_1" in listed.stdout
    assert "no answer within 10 s [/]" in listed.stdout
    _assert_inert(listed.output)
    page = json.loads(alice("--json", "executions", "deliveries", execution_id, "--limit", "1").stdout)
    assert [d["attempt"] for d in page["items"]] == [2]
    assert alice("executions", "deliveries", "nope").exit_code == ExitCode.NOT_FOUND
