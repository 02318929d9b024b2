"""Hostile requests that got past the API's checks (request.json rewritten behind it), on the moto stack with the
tiny models: each ends FAILED BAD_INPUT, and another user's execution submitted right after still finishes in
about its normal time. Two workers share a burst: neither holds what it cannot start soon."""

from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image

from gpu_worker.models import ModelRegistry
from local.consumers import QueueConsumers
from shared.aws import client
from shared.settings import StackSettings
from shared.stages import PROMPT_MAX_BYTES, request_key
from tests.integration.executions_support import make_pipeline, new_id
from tests.integration.test_worker import TXT2IMG, RunningWorker, consumers, env, start, wait_final  # noqa: F401
from tests.unit.worker.test_inputs import png_header_only

pytestmark = pytest.mark.timeout(300)


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _rewrite_request(settings: StackSettings, execution_id: str, **changes: object) -> None:
    s3 = client("s3", settings)
    key = request_key(execution_id)
    request = json.loads(s3.get_object(Bucket=settings.results_bucket, Key=key)["Body"].read())
    for index, stage in enumerate(request["stages"]):
        stage.update(changes.get(f"stage{index}", {}))  # type: ignore[call-overload]
    request.update(changes.get("request", {}))  # type: ignore[call-overload]
    s3.put_object(Bucket=settings.results_bucket, Key=key, Body=json.dumps(request).encode())


def _upload(settings: StackSettings, key: str, body: bytes) -> str:
    client("s3", settings).put_object(Bucket=settings.uploads_bucket, Key=key, Body=body)
    return f"s3://{settings.uploads_bucket}/{key}"


@pytest.mark.slow
def test_hostile_inputs_fail_bad_input_and_do_not_slow_another_user(
    env: StackSettings,  # noqa: F811
    consumers: QueueConsumers,  # noqa: F811
) -> None:
    normal = make_pipeline(env, TXT2IMG)
    registry = ModelRegistry(env)
    registry.warm_up()  # as gpu_worker.process does before polling
    hostile = make_pipeline(env, [{"type": "txt2img", "inline": True, "body": "x", "parameters": {"steps": 2}}])
    ids = {name: start(hostile, new_id()) for name in ("bomb", "huge_prompt", "blowup", "wide")}
    img2img = {"type": "img2img", "parameters": {"steps": 2, "strength": 1.0, "guidanceScale": 7.5}}
    _rewrite_request(
        env,
        ids["bomb"],
        stage0=img2img,
        request={"imageUri": _upload(env, "uploads/x/bomb.png", png_header_only(14000, 14000))},
    )
    _rewrite_request(
        env, ids["wide"], stage0=img2img, request={"imageUri": _upload(env, "uploads/x/wide.png", _png((4096, 64)))}
    )
    huge = _upload(env, "uploads/x/huge.txt", b"a fox " * (2 * 1024 * 1024))
    _rewrite_request(env, ids["huge_prompt"], stage0={"body": None, "bodyUri": huge})
    _rewrite_request(
        env, ids["blowup"], stage0={"body": "{{a}}" * 400}, request={"variables": {"a": "y" * PROMPT_MAX_BYTES}}
    )
    with RunningWorker(env, aws_io=True, registry=registry) as worker:
        began = time.monotonic()
        other = start(normal, new_id())  # another user's, right after
        done = wait_final(other, 120)
        other_s = time.monotonic() - began
        results = {name: wait_final(execution_id, 60) for name, execution_id in ids.items()}
        assert worker.open_jobs() == 0
        began = time.monotonic()
        alone = wait_final(start(normal, new_id()), 120)
        alone_s = time.monotonic() - began
    assert alone.status == "SUCCEEDED"
    assert done.status == "SUCCEEDED"
    for name, result in results.items():
        assert (name, result.status, result.error["code"]) == (name, "FAILED", "BAD_INPUT")
    print(f"another user's execution: {alone_s:.1f} s alone, {other_s:.1f} s behind four hostile ones")
    assert other_s < 3 * alone_s + 10  # generous: this machine is shared


@pytest.mark.slow
def test_two_workers_share_a_burst(env: StackSettings, consumers: QueueConsumers) -> None:  # noqa: F811
    pipeline = make_pipeline(env, TXT2IMG)
    ids = [start(pipeline, new_id()) for _ in range(6)]
    ran_on: dict[str, str] = {}
    registries = [ModelRegistry(env), ModelRegistry(env)]
    for registry in registries:  # one after the other: diffusers' loading is not thread-safe (in production each
        registry.warm_up()  # worker is a process of its own)
    first = RunningWorker(
        env, registry=registries[0], on_closed=lambda job: ran_on.setdefault(job.execution_id, "first")
    )
    second = RunningWorker(
        env, registry=registries[1], on_closed=lambda job: ran_on.setdefault(job.execution_id, "second")
    )
    with first, second:
        for execution_id in ids:
            assert wait_final(execution_id, 180).status == "SUCCEEDED"
    assert set(ran_on) == set(ids)
    assert set(ran_on.values()) == {"first", "second"}, ran_on
