"""The `stagehub` command line through CliRunner, against the in-memory API (injected as a client factory)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from stagehub_cli.client import StagehubClient
from stagehub_cli.main import ExitCode, app
from stagehub_cli.tokens import TokenStore
from tests.unit.cli.fake_api import PNG_1X1, FakeApi

PASSWORD = "correct horse battery"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class Cli:
    """Runs `stagehub ...` with its own config dir, recording the API URL each client was made for."""

    def __init__(self, api: FakeApi, config_dir: Path) -> None:
        self.api = api
        self.config_dir = config_dir
        self.urls: list[str] = []
        self.runner = CliRunner()

    def factory(self, url: str, store: TokenStore) -> StagehubClient:
        self.urls.append(url)
        return self.api.client(token_store=store)

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        argv = ["--config-dir", str(self.config_dir), *args]
        return self.runner.invoke(app, argv, obj=self.factory, input=input, env=env)

    def login_as(self, email: str) -> None:
        assert self("register", "--email", email, "--password-stdin", input=PASSWORD + "\n").exit_code == 0
        assert self("login", "--email", email, "--password-stdin", input=PASSWORD + "\n").exit_code == 0

    def create(self, example: str) -> str:
        result = self("--json", "pipelines", "create", "-f", str(EXAMPLES / example))
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["pipelineId"])


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(FakeApi(), tmp_path / "config")


@pytest.fixture
def alice(cli: Cli) -> Cli:
    cli.login_as("alice@example.com")
    return cli


def test_register_and_login_with_hidden_prompts_then_whoami(cli: Cli) -> None:
    registered = cli("register", "--email", "Alice@Example.com", "--display-name", "Alice", input=f"{PASSWORD}\n" * 2)
    assert registered.exit_code == 0, registered.output
    assert "Registered alice@example.com (Alice)" in registered.stdout
    assert PASSWORD not in registered.output  # hidden prompt: never echoed

    logged_in = cli("login", "--email", "alice@example.com", input=f"{PASSWORD}\n")
    assert logged_in.exit_code == 0, logged_in.output
    assert PASSWORD not in logged_in.output

    who = cli("whoami")
    assert who.exit_code == 0
    assert "alice@example.com (Alice)" in who.stdout
    tokens = cli.config_dir / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert json.loads(tokens.read_text())["http://127.0.0.1:8000"]["email"] == "alice@example.com"


def test_wrong_password_is_an_auth_error_on_one_stderr_line(cli: Cli) -> None:
    cli("register", "--email", "a@example.com", "--password-stdin", input=PASSWORD + "\n")
    result = cli("login", "--email", "a@example.com", "--password-stdin", input="wrong password\n")
    assert result.exit_code == ExitCode.AUTH == 3
    assert result.stderr.strip().splitlines() == [
        "error: UNAUTHORIZED (401): wrong email or password (run `stagehub login`)"
    ]
    assert result.stdout == ""


def test_commands_need_a_login(cli: Cli) -> None:
    result = cli("pipelines", "list")
    assert result.exit_code == ExitCode.AUTH
    assert "UNAUTHORIZED" in result.stderr


def test_validation_errors_show_their_details(cli: Cli) -> None:
    result = cli("register", "--email", "a@example.com", "--password-stdin", input="short\n")
    assert result.exit_code == ExitCode.API_ERROR == 1
    assert "VALIDATION_FAILED (422)" in result.stderr
    assert "body.password: too short" in result.stderr


def test_api_url_from_option_and_environment(cli: Cli) -> None:
    cli("--api", "http://other:9000/", "stage-types")
    cli("stage-types", env={"STAGEHUB_API": "https://api.example.com"})
    assert cli.urls == ["http://other:9000", "https://api.example.com"]


def test_unreachable_api_has_its_own_exit_code(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def factory(url: str, store: TokenStore) -> StagehubClient:
        return StagehubClient(url, token_store=store, transport=httpx.MockTransport(refuse), sleep=lambda _s: None)

    result = CliRunner().invoke(app, ["--config-dir", str(tmp_path), "whoami"], obj=factory)
    assert result.exit_code == ExitCode.UNREACHABLE == 6
    assert result.stderr.startswith("error: cannot reach the API: GET http://127.0.0.1:8000/users/me")


def test_pipelines_create_list_show_rate_delete(alice: Cli) -> None:
    pipeline_id = alice.create("chain-txt2txt-txt2img.json")
    stored = alice.api.pipelines[pipeline_id]
    assert stored["stages"] == json.loads((EXAMPLES / "chain-txt2txt-txt2img.json").read_text())["stages"]

    listed = alice("pipelines", "list")
    assert listed.exit_code == 0
    assert pipeline_id in listed.stdout
    assert "Writer and painter" in listed.stdout
    shown = alice("pipelines", "show", pipeline_id)
    assert shown.exit_code == 0
    assert "{{previous}}, digital art" in shown.stdout
    assert "txt2txt" in shown.stdout
    assert alice("pipelines", "rate", pipeline_id, "5").exit_code == ExitCode.AUTH  # own pipeline: 403

    alice.login_as("bob@example.com")
    rated = alice("--json", "pipelines", "rate", pipeline_id, "4")
    assert rated.exit_code == 0
    assert json.loads(rated.stdout) == {"average": 4.0, "count": 1, "mine": 4}
    assert alice("pipelines", "rate", pipeline_id, "9").exit_code == ExitCode.USAGE  # 1..5 checked locally
    denied = alice("pipelines", "delete", pipeline_id)
    assert denied.exit_code == ExitCode.AUTH
    assert "FORBIDDEN (403)" in denied.stderr

    alice.login_as("alice2@example.com")
    mine = alice("--json", "pipelines", "list", "--mine")
    assert json.loads(mine.stdout)["items"] == []


def test_pipelines_list_pages_and_all(alice: Cli) -> None:
    ids = [alice.create("txt2img.json") for _ in range(3)]
    first = alice("--json", "pipelines", "list", "--limit", "2")
    page = json.loads(first.stdout)
    assert [item["pipelineId"] for item in page["items"]] == ids[::-1][:2]
    human = alice("pipelines", "list", "--limit", "2")
    assert f"more: --cursor {page['nextCursor']}" in human.stderr
    every = json.loads(alice("--json", "pipelines", "list", "--limit", "2", "--all").stdout)
    assert [item["pipelineId"] for item in every["items"]] == ids[::-1]
    assert every["nextCursor"] is None


def test_missing_pipeline_is_exit_4(alice: Cli) -> None:
    result = alice("pipelines", "show", "no-such-id")
    assert result.exit_code == ExitCode.NOT_FOUND == 4
    assert result.stderr.strip() == "error: NOT_FOUND (404): pipeline not found"


def test_create_rejects_a_file_that_is_not_a_pipeline(alice: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = alice("pipelines", "create", "-f", str(bad))
    assert result.exit_code == ExitCode.USAGE
    assert "must be an object with a 'stages' list" in result.stderr
    assert alice.api.pipelines == {}


def test_run_wait_shows_progress_and_downloads_results(alice: Cli, tmp_path: Path) -> None:
    pipeline_id = alice.create("chain-txt2txt-txt2img.json")
    out = tmp_path / "out"
    result = alice("run", pipeline_id, "--wait", "--poll-interval", "0.05", "--output", str(out))

    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.stdout
    # The (non-tty) progress bar renders its final state on stderr: the last stage and 100%.
    assert "SUCCEEDED stage 2/2 step 2/2" in result.stderr
    assert "100%" in result.stderr
    assert (out / "stage1-0.png").read_bytes() == PNG_1X1
    assert (out / "stage0-0.txt").read_text() == "a red fox"
    assert f"wrote {out / 'stage1-0.png'}" in result.stdout


def test_run_wait_json_prints_only_the_final_execution(alice: Cli, tmp_path: Path) -> None:
    pipeline_id = alice.create("txt2img.json")
    result = alice("--json", "run", pipeline_id, "--wait", "-o", str(tmp_path / "o"))
    assert result.exit_code == 0
    final = json.loads(result.stdout)
    assert final["status"] == "SUCCEEDED"
    assert final["progress"]["percent"] == 100
    assert sorted(Path(f).name for f in final["files"]) == ["stage0-0.txt", "stage1-0.png"]
    assert result.stderr == ""  # no progress bar in JSON mode


def test_run_wait_exits_5_when_the_execution_fails(tmp_path: Path) -> None:
    api = FakeApi(script=[("RUNNING", None), ("FAILED", None)], final_error={"code": "OUT_OF_MEMORY", "message": "oom"})
    cli = Cli(api, tmp_path / "config")
    cli.login_as("a@example.com")
    result = cli("run", cli.create("txt2img.json"), "--wait", "-o", str(tmp_path / "out"))
    assert result.exit_code == ExitCode.EXECUTION_FAILED == 5
    assert "error: execution FAILED (OUT_OF_MEMORY: oom)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_run_sends_variables_overrides_and_backend(alice: Cli) -> None:
    pipeline_id = alice.create("portrait-variable.json")
    result = alice(
        "--json", "run", pipeline_id, "--var", "subject=an old sailor", "--var", "mood=a=b",
        "--param", "0.steps=8", "--param", "0.scheduler=DDIM", "--param", "0.guidanceScale=3.5",
        "--backend", "gpu-fleet", "--idempotency-key", "key-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    execution = json.loads(result.stdout)
    assert execution["status"] == "QUEUED"
    assert alice.api.executions[execution["executionId"]]["request"] == {
        "variables": {"subject": "an old sailor", "mood": "a=b"},
        "backend": "gpu-fleet",
        "parameters": {"0": {"steps": 8, "scheduler": "DDIM", "guidanceScale": 3.5}},
    }
    assert alice.api.requests[-1].headers["Idempotency-Key"] == "key-1"


@pytest.mark.parametrize(("option", "value"), [("--param", "steps=4"), ("--param", "x.steps=4"), ("--var", "novalue")])
def test_malformed_run_options_are_usage_errors(alice: Cli, option: str, value: str) -> None:
    pipeline_id = alice.create("txt2img.json")
    result = alice("run", pipeline_id, option, value)
    assert result.exit_code == ExitCode.USAGE
    assert alice.api.executions == {}


def test_run_var_at_file_uploads_it_first(alice: Cli, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(PNG_1X1)
    pipeline_id = alice.create("img2img-upload.json")
    result = alice("--json", "run", pipeline_id, "--var", f"image=@{image}")
    assert result.exit_code == 0, result.output
    uri = alice.api.executions[json.loads(result.stdout)["executionId"]]["request"]["variables"]["image"]
    assert uri.startswith("s3://uploads/")
    assert alice.api.blobs[uri.removeprefix("s3://uploads")] == PNG_1X1


def test_upload_prints_the_uri(alice: Cli, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("a very long prompt")
    result = alice("upload", str(prompt))
    assert result.exit_code == 0
    uri = result.stdout.strip()
    assert alice.api.blobs[uri.removeprefix("s3://uploads")] == b"a very long prompt"
    assert alice.api.requests[-1].headers["Content-Type"] == "text/plain"


def test_executions_list_show_cancel_delete(alice: Cli) -> None:
    pipeline_id = alice.create("txt2img.json")
    first = json.loads(alice("--json", "run", pipeline_id).stdout)["executionId"]
    second = json.loads(alice("--json", "run", pipeline_id).stdout)["executionId"]

    cancelled = alice("executions", "cancel", first)
    assert cancelled.exit_code == 0
    assert "CANCELLED" in cancelled.stdout
    again = alice("executions", "cancel", first)
    assert again.exit_code == ExitCode.API_ERROR
    assert "CONFLICT (409)" in again.stderr

    by_status = json.loads(alice("--json", "executions", "list", "--status", "cancelled").stdout)
    assert [item["executionId"] for item in by_status["items"]] == [first]
    of_pipeline = json.loads(alice("--json", "executions", "list", "--pipeline", pipeline_id).stdout)
    assert [item["executionId"] for item in of_pipeline["items"]] == [second, first]
    table = alice("executions", "list")
    assert first in table.stdout
    assert second in table.stdout

    shown = alice("executions", "show", second)
    assert shown.exit_code == 0
    assert "status: QUEUED" in shown.stdout
    assert alice("executions", "delete", second).exit_code == 0
    assert alice("executions", "show", second).exit_code == ExitCode.NOT_FOUND


def test_executions_wait_and_results(alice: Cli, tmp_path: Path) -> None:
    pipeline_id = alice.create("txt2img.json")
    execution_id = json.loads(alice("--json", "run", pipeline_id).stdout)["executionId"]
    early = alice("results", execution_id, "-o", str(tmp_path))
    assert early.exit_code == ExitCode.API_ERROR
    assert "CONFLICT (409)" in early.stderr

    assert alice("executions", "wait", execution_id, "--poll-interval", "0.05").exit_code == 0
    result = alice("--json", "results", execution_id, "-o", str(tmp_path / "r"))
    assert result.exit_code == 0
    files = json.loads(result.stdout)["files"]
    assert [Path(f).name for f in files] == ["stage0-0.txt", "stage1-0.png"]
    assert Path(files[1]).read_bytes() == PNG_1X1


def test_stage_types_table_and_json(alice: Cli) -> None:
    human = alice("stage-types")
    assert "txt2img" in human.stdout
    assert "steps=25 (min=1, max=150)" in human.stdout
    assert json.loads(alice("--json", "stage-types").stdout)[0]["type"] == "txt2img"


def test_logout_revokes_and_forgets(alice: Cli) -> None:
    live = set(alice.api.refresh)
    assert alice("logout").exit_code == 0
    assert not live & set(alice.api.refresh)
    tokens: dict[str, Any] = json.loads((alice.config_dir / "tokens.json").read_text())
    assert tokens == {}
    assert alice("whoami").exit_code == ExitCode.AUTH


def test_expired_access_token_is_refreshed_and_saved(alice: Cli) -> None:
    before = json.loads((alice.config_dir / "tokens.json").read_text())["http://127.0.0.1:8000"]
    alice.api.expire_access_tokens()
    assert alice("whoami").exit_code == 0
    after = json.loads((alice.config_dir / "tokens.json").read_text())["http://127.0.0.1:8000"]
    assert after["refreshToken"] != before["refreshToken"]
    assert after["accessToken"] in alice.api.access
