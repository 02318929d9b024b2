"""The product end to end: the local stack as `make run` starts it, driven only through the `stagehub` CLI and client.

Two users; the chained example pipeline run with --wait (progress bar to 100%), its image and text downloaded;
a rating by the other user; a cancellation; a deletion whose result URLs stop working; the pipeline deleted;
20 executions submitted at once, all SUCCEEDED, none lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from local.stack import LocalStack
from stagehub_cli.client import ApiError, StagehubClient
from stagehub_cli.main import ExitCode
from stagehub_cli.tokens import FileTokenStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PASSWORD = "e2e password 123"
WAIT_S = 300.0
CONCURRENT_RUNS = 20


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    models_dir = Path(os.environ.get("STAGEHUB_MODELS_DIR", ROOT / ".cache" / "models"))
    with LocalStack(models_dir, port=0) as running:
        yield running


class User:
    """One person at a terminal: their own config dir (tokens), running the real `stagehub` entry point."""

    def __init__(self, stack: LocalStack, config_dir: Path, name: str) -> None:
        self.stack = stack
        self.config_dir = config_dir
        self.email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"

    def __call__(self, *args: str, input: str | None = None, expect: int = 0) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"STAGEHUB_API": self.stack.url, "STAGEHUB_CONFIG_DIR": str(self.config_dir)}
        done = subprocess.run(
            [sys.executable, "-m", "stagehub_cli.main", *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=WAIT_S + 60,
            check=False,
        )
        assert done.returncode == expect, f"stagehub {' '.join(args)} -> {done.returncode}\n{done.stderr}"
        return done

    def json(self, *args: str, expect: int = 0) -> dict:  # type: ignore[type-arg]
        return json.loads(self("--json", *args, expect=expect).stdout)

    def signup(self) -> None:
        self("register", "--email", self.email, "--password-stdin", input=PASSWORD + "\n")
        self("login", "--email", self.email, "--password-stdin", input=PASSWORD + "\n")

    def client(self) -> StagehubClient:
        """The Python client on the same saved session the CLI uses."""
        return StagehubClient(self.stack.url, token_store=FileTokenStore(self.config_dir, self.stack.url))


@pytest.fixture(scope="module")
def alice(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    user = User(stack, tmp_path_factory.mktemp("alice"), "alice")
    user.signup()
    return user


@pytest.fixture(scope="module")
def bob(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    user = User(stack, tmp_path_factory.mktemp("bob"), "bob")
    user.signup()
    return user


def test_chained_pipeline_lifecycle(alice: User, bob: User, tmp_path: Path) -> None:
    assert alice.json("whoami")["email"] == alice.email
    pipeline = alice.json("pipelines", "create", "-f", str(EXAMPLES / "chain-txt2txt-txt2img.json"))
    pipeline_id = pipeline["pipelineId"]
    assert [stage["type"] for stage in pipeline["stages"]] == ["txt2txt", "txt2img"]

    # Run with --wait: the progress bar (stderr, not a tty here) ends at 100%, results land in out/.
    out = tmp_path / "out"
    ran = alice("run", pipeline_id, "--wait", "--poll-interval", "0.2", "--output", str(out))
    assert "100%" in ran.stderr
    assert "SUCCEEDED" in ran.stdout
    [execution] = alice.json("executions", "list", "--pipeline", pipeline_id)["items"]
    assert execution["status"] == "SUCCEEDED"
    assert execution["progress"]["percent"] == 100
    texts = sorted(out.glob("stage0-*.txt"))
    images = sorted(out.glob("stage1-*.png"))
    assert texts, f"no text output in {list(out.iterdir())}"
    assert texts[0].read_text(encoding="utf-8").strip()
    assert images, f"no image output in {list(out.iterdir())}"
    with Image.open(images[0]) as image:
        image.verify()
    with Image.open(images[0]) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))

    # The other user rates it; the author sees the rating, and may not rate it nor be deleted by bob.
    assert bob.json("pipelines", "rate", pipeline_id, "4") == {"average": 4.0, "count": 1, "mine": 4}
    assert alice.json("pipelines", "show", pipeline_id)["rating"]["average"] == 4.0
    alice("pipelines", "rate", pipeline_id, "5", expect=ExitCode.AUTH)
    bob("pipelines", "delete", pipeline_id, expect=ExitCode.AUTH)
    # Executions are private: bob cannot see alice's.
    bob("executions", "show", execution["executionId"], expect=ExitCode.NOT_FOUND)

    # A run the model cannot do (the tiny GPT-2 holds 256 tokens) fails with the reason, and --wait exits 5.
    failed = alice("run", pipeline_id, "--param", "0.maxNewTokens=2048", "--wait", expect=ExitCode.EXECUTION_FAILED)
    assert "error: execution FAILED (BAD_INPUT:" in failed.stderr

    # A second execution, cancelled (many steps, so it cannot finish first), ends CANCELLED.
    second = alice.json("run", pipeline_id, "--param", "1.steps=150")
    cancelled = alice.json("executions", "cancel", second["executionId"])
    assert cancelled["status"] == "CANCELLED" or cancelled["cancelRequested"] is True
    waited = alice("--json", "executions", "wait", second["executionId"], expect=ExitCode.EXECUTION_FAILED)
    assert json.loads(waited.stdout)["status"] == "CANCELLED"

    # Deleting the first execution: the API forgets it and its presigned result URLs stop working.
    client = alice.client()
    result = client.result(execution["executionId"])
    urls = [output["url"] for output in result["outputs"] if output.get("url")]
    assert urls
    assert all(httpx.get(url, timeout=10).status_code == 200 for url in urls)
    alice("executions", "delete", execution["executionId"])
    alice("executions", "show", execution["executionId"], expect=ExitCode.NOT_FOUND)
    with pytest.raises(ApiError) as gone:
        client.result(execution["executionId"])
    assert gone.value.status == 404
    assert all(httpx.get(url, timeout=10).status_code != 200 for url in urls)

    # The author deletes the pipeline.
    alice("pipelines", "delete", pipeline_id)
    alice("pipelines", "show", pipeline_id, expect=ExitCode.NOT_FOUND)


def test_twenty_concurrent_executions_all_succeed(alice: User) -> None:
    client = alice.client()
    pipeline = alice.json("pipelines", "create", "-f", str(EXAMPLES / "portrait-variable.json"))
    subjects = [f"subject number {n}" for n in range(CONCURRENT_RUNS)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CONCURRENT_RUNS) as pool:
        submitted = list(pool.map(lambda s: client.run(pipeline["pipelineId"], {"subject": s}), subjects))
        ids = {execution["executionId"] for execution in submitted}
        assert len(ids) == CONCURRENT_RUNS
        finals = list(pool.map(lambda i: client.wait(i, poll_interval=1.0, timeout=WAIT_S), sorted(ids)))
    elapsed = time.monotonic() - started

    assert [final["status"] for final in finals] == ["SUCCEEDED"] * CONCURRENT_RUNS, [f["error"] for f in finals]
    listed = {e["executionId"] for e in client.iter_pipeline_executions(pipeline["pipelineId"], page_size=7)}
    assert listed == ids  # none lost, none duplicated
    for execution_id in sorted(ids)[:3]:
        outputs = client.result(execution_id)["outputs"]
        assert [output["type"] for output in outputs] == ["image"]
    print(f"{CONCURRENT_RUNS} executions submitted at once, all SUCCEEDED in {elapsed:.1f} s")


def test_a_webhook_gets_signed_started_and_completed_events_and_a_retry(alice: User) -> None:
    """Webhooks over HTTP on the local stack: the reference library verifies every delivery; the first one is
    answered 500 and comes again (after the schedule's first delay, 5 s) with the same webhook-id."""
    from tests.integration.webhook_receiver import Receiver, running_receiver

    client = alice.client()
    pipeline = alice.json("pipelines", "create", "-f", str(EXAMPLES / "txt2img.json"))
    with running_receiver(Receiver(script=[500], secret=client.webhook_secret())) as receiver:
        events = ["--webhook-event", "started", "--webhook-event", "completed"]
        ran = alice.json("run", pipeline["pipelineId"], "--webhook", receiver.url, *events, "--wait")
        assert ran["status"] == "SUCCEEDED"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(receiver.received) < 3:
            time.sleep(0.2)
    assert all(r.error is None for r in receiver.received), [r.error for r in receiver.received]
    assert len(receiver.received) == 3
    types = [r.verified["type"] for r in receiver.received]
    assert sorted(set(types)) == ["execution.completed", "execution.started"]
    first = receiver.received[0]
    retried = [r for r in receiver.received if r.webhook_id == first.webhook_id]
    assert len(retried) == 2
    completed = next(r.verified for r in receiver.received if r.verified["type"] == "execution.completed")
    assert completed["data"]["status"] == "SUCCEEDED"
    log = client.webhook_deliveries(ran["executionId"])["items"]
    assert sorted((d["attempt"], d["status"]) for d in log) == [(1, 200), (1, 500), (2, 200)]
