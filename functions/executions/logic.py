"""Executions: submit (validate, resolve, persist, enqueue), read, list, cancel, delete, and fetch results.

Plain Python: no API Gateway here. Collaborators (the record store, S3, SQS, settings) come in `ExecutionDeps`.
Submission order keeps nothing lost: request.json, then the QUEUED record, then the in-queue message; a failed
send turns the record FAILED, so no record waits QUEUED for a message that does not exist.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pynamodb.exceptions import PynamoDBException

from functions.executions.schemas import SubmitExecution
from functions.executions.store import ExecutionStore, StoreUnavailable, user_status
from functions.pagination import Page, check_cursor
from functions.webhooks.events import EventKind, publish_execution_change
from functions.webhooks.subscription import check_subscription, subscription_attributes
from shared import resources as res
from shared.errors import Conflict, NotFound, ServiceUnavailable, StagehubError, ValidationFailed
from shared.messages import ExecutionStatus, InQueueMessage, utc_now_iso
from shared.models import ExecutionRecord, PipelineRecord
from shared.queues import QueueClient
from shared.settings import Settings
from shared.stages import (
    PREVIOUS,
    PROMPT_MAX_BYTES,
    TEMPLATE_PATTERN,
    ExecutionRequest,
    ResolvedStage,
    ResultManifest,
    StageDefinition,
    execution_prefix,
    family_problems,
    manifest_key,
    parameters_to_wire,
    parse_parameters,
    request_key,
    template_variables,
    with_model_defaults,
)
from shared.storage import BlobStore, S3Uri

IDEMPOTENCY_KEY_MAX = 255
MAX_VARIABLES = 64
VARIABLES_MAX_BYTES = 64 * 1024
IMAGE_VARIABLE = "image"
# How long a request that lost an Idempotency-Key race waits for the winner's record to appear.
IDEMPOTENCY_WAIT_S = 3.0


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _is_id(value: str) -> bool:
    """Ids are UUIDs: anything else names nothing (and must not reach DynamoDB's key limits as a 5xx)."""
    return bool(_ID.fullmatch(value))


@dataclass(frozen=True)
class ExecutionDeps:
    settings: Settings
    store: ExecutionStore
    blobs: BlobStore
    queues: QueueClient


@dataclass(frozen=True)
class Submission:
    user_id: str
    pipeline_id: str
    body: SubmitExecution
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Submitted:
    record: ExecutionRecord
    created: bool  # False for an idempotent replay


@dataclass
class _Problems:
    """Validation problems collected over the whole request, reported together as one 422."""

    details: list[dict[str, Any]] = field(default_factory=list)

    def add(self, loc: list[str | int], message: str, kind: str = "value_error") -> None:
        self.details.append({"loc": [str(p) for p in loc], "message": message, "type": kind})

    def raise_if_any(self) -> None:
        if self.details:
            first = self.details[0]
            raise ValidationFailed(f"{'.'.join(first['loc'])}: {first['message']}", details=self.details)


# --- submission ---


def submit_execution(submission: Submission, deps: ExecutionDeps) -> Submitted:
    key = _scoped_idempotency_key(submission)
    now = datetime.now(UTC)
    if key is not None:
        replayed = _replay(key, submission.user_id, deps, now)
        if replayed is not None:
            return Submitted(replayed, created=False)
    check_subscription(submission.body, deps.settings)
    stages = load_pipeline_stages(submission.pipeline_id, deps)
    execution_id = str(uuid.uuid4())
    request = resolve_request(execution_id, submission, stages, deps)
    if key is not None and not deps.store.claim_idempotency_key(
        key, execution_id, now + timedelta(seconds=deps.settings.idempotency_ttl_s), now
    ):
        return Submitted(_await_winner(key, submission.user_id, deps, now), created=False)
    try:
        record = _persist(request, deps, submission.body)
    except StagehubError:
        if key is not None:
            deps.store.release_idempotency_key(key, execution_id)
        raise
    try:
        _enqueue(record, deps)
    except StagehubError as exc:
        _fail_unsent(record, deps)
        if key is not None:
            deps.store.release_idempotency_key(key, execution_id)
        raise ServiceUnavailable("the execution could not be queued; try again") from exc
    return Submitted(record, created=True)


def _scoped_idempotency_key(submission: Submission) -> str | None:
    key = submission.idempotency_key
    if key is None:
        return None
    if not key.strip() or len(key.encode()) > IDEMPOTENCY_KEY_MAX:
        raise ValidationFailed(f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} bytes")
    return f"{submission.user_id}#{key}"


def _replay(key: str, user_id: str, deps: ExecutionDeps, now: datetime) -> ExecutionRecord | None:
    execution_id = deps.store.idempotent_execution_id(key, now)
    if execution_id is None:
        return None
    record = deps.store.get(execution_id)
    if record is None or record.user_id != user_id:
        # The key's execution was created and then deleted by its owner.
        raise Conflict("the execution created with this Idempotency-Key was deleted")
    return record


def _await_winner(key: str, user_id: str, deps: ExecutionDeps, now: datetime) -> ExecutionRecord:
    """Another request with the same key won the claim: answer with its execution once it is written."""
    deadline = time.monotonic() + IDEMPOTENCY_WAIT_S
    while True:
        execution_id = deps.store.idempotent_execution_id(key, now)
        record = deps.store.get(execution_id) if execution_id else None
        if record is not None and record.user_id == user_id:
            return record
        if time.monotonic() > deadline:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly")
        time.sleep(0.05)


def load_pipeline_stages(pipeline_id: str, deps: ExecutionDeps) -> list[StageDefinition]:
    """The stages of a pipeline (its definition JSON in S3); NotFound for an unknown pipeline."""
    if not _is_id(pipeline_id):
        raise NotFound("no such pipeline")
    try:
        pipeline = PipelineRecord.get(pipeline_id)
    except PipelineRecord.DoesNotExist as exc:
        raise NotFound("no such pipeline") from exc
    except PynamoDBException as exc:
        raise StoreUnavailable("database error reading the pipeline") from exc
    definition = deps.blobs.get_json(deps.settings.pipelines_bucket, pipeline.definition_key)
    raw_stages = definition.get("stages", []) if isinstance(definition, dict) else definition
    known = set(StageDefinition.model_fields)
    return [StageDefinition.model_validate({k: v for k, v in s.items() if k in known}) for s in raw_stages]


def resolve_request(
    execution_id: str, submission: Submission, stages: list[StageDefinition], deps: ExecutionDeps
) -> ExecutionRequest:
    """Validate the submission against the pipeline and build request.json (raises one 422 with every problem)."""
    settings, body, problems = deps.settings, submission.body, _Problems()
    backend = body.backend or res.DEFAULT_BACKEND
    if backend not in settings.backend_queues:
        problems.add(["body", "backend"], f"unknown backend; one of {sorted(settings.backend_queues)}")
    _check_variables(body.variables, problems)
    overrides = _stage_overrides(body.parameters, len(stages), problems)
    resolved = [_resolve_stage(i, stage, overrides.get(i, {}), settings, problems) for i, stage in enumerate(stages)]
    _check_templates(stages, body.variables, problems)
    image_uri = _check_image(body.variables.get(IMAGE_VARIABLE), submission.user_id, deps, problems)
    if stages and stages[0].type == "img2img" and image_uri is None and IMAGE_VARIABLE not in body.variables:
        problems.add(["body", "variables", IMAGE_VARIABLE], "the first stage is img2img: variables.image is required")
    problems.raise_if_any()
    created_at = utc_now_iso()
    deadline = datetime.now(UTC) + timedelta(seconds=settings.execution_deadline_s)
    return ExecutionRequest(
        executionId=execution_id,
        pipelineId=submission.pipeline_id,
        userId=submission.user_id,
        backend=backend,
        stages=[stage for stage in resolved if stage is not None],
        variables=body.variables,
        imageUri=image_uri,
        createdAt=created_at,
        deadline=deadline.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


def _check_variables(variables: dict[str, str], problems: _Problems) -> None:
    if len(variables) > MAX_VARIABLES:
        problems.add(["body", "variables"], f"at most {MAX_VARIABLES} variables")
    total = 0
    for name, value in variables.items():
        if not TEMPLATE_PATTERN.fullmatch("{{" + name + "}}") or len(name) > 64 or name == PREVIOUS:
            problems.add(["body", "variables", name], "a variable name is a letter or _ then letters, digits or _")
        size = len(value.encode())
        total += size
        if size > PROMPT_MAX_BYTES:
            problems.add(["body", "variables", name], f"at most {PROMPT_MAX_BYTES} bytes")
    if total > VARIABLES_MAX_BYTES:
        problems.add(["body", "variables"], f"at most {VARIABLES_MAX_BYTES} bytes in all")


def _stage_overrides(
    parameters: dict[str, dict[str, Any]], stage_count: int, problems: _Problems
) -> dict[int, dict[str, Any]]:
    overrides: dict[int, dict[str, Any]] = {}
    for key, values in parameters.items():
        if not key.isdigit() or int(key) >= stage_count:
            problems.add(["body", "parameters", key], f"unknown stage index; the pipeline has {stage_count} stages")
            continue
        overrides[int(key)] = values
    return overrides


def _resolve_stage(
    index: int, stage: StageDefinition, override: dict[str, Any], settings: Settings, problems: _Problems
) -> ResolvedStage | None:
    try:
        asked = with_model_defaults(
            stage.type, {**stage.parameters, **override}, settings.models, settings.default_models
        )
        params = parse_parameters(stage.type, asked)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ["body", "parameters", index, *err["loc"]]
            problems.add(loc, str(err["msg"]), str(err["type"]))
        return None
    if settings.models and params.model is not None and params.model not in settings.models:
        problems.add(["body", "parameters", index, "model"], f"unknown model; one of {sorted(settings.models)}")
    for name, message in family_problems(
        stage.type, parameters_to_wire(params), settings.models, settings.default_models
    ):
        problems.add(["body", "parameters", index, name], message)  # API.md, "Models"
    inline = stage.inline
    return ResolvedStage(
        index=index,
        type=stage.type,
        body=stage.body if inline else None,
        bodyUri=None if inline else stage.body,
        parameters=parameters_to_wire(params),
    )


def _check_templates(stages: list[StageDefinition], variables: dict[str, str], problems: _Problems) -> None:
    for index, stage in enumerate(stages):
        if not stage.inline:
            continue
        for name in sorted(template_variables(stage.body)):
            if name == PREVIOUS:
                if index == 0:
                    problems.add(["stages", index, "body"], "{{previous}} cannot be used in the first stage")
            elif name not in variables:
                problems.add(["body", "variables", name], f"stage {index} uses {{{{{name}}}}}: a value is required")


def _check_image(uri: str | None, user_id: str, deps: ExecutionDeps, problems: _Problems) -> str | None:
    """variables.image must be an existing upload of the caller's own."""
    if uri is None:
        return None
    loc: list[str | int] = ["body", "variables", IMAGE_VARIABLE]
    try:
        location = S3Uri.parse(uri)
    except ValueError:
        problems.add(loc, "must be an s3:// URI from POST /uploads")
        return None
    if location.bucket != deps.settings.uploads_bucket or not location.key.startswith(f"uploads/{user_id}/"):
        problems.add(loc, "must be one of your own uploads")
        return None
    if deps.blobs.head(location.bucket, location.key) is None:
        problems.add(loc, "the upload has not been made")
        return None
    return str(location)


def _persist(request: ExecutionRequest, deps: ExecutionDeps, body: SubmitExecution | None = None) -> ExecutionRecord:
    settings, execution_id = deps.settings, request.execution_id
    uri = deps.blobs.put_json(settings.results_bucket, request_key(execution_id), request.to_json())
    status = ExecutionStatus.QUEUED
    record = ExecutionRecord(
        execution_id,
        pipeline_id=request.pipeline_id,
        user_id=request.user_id,
        backend=request.backend,
        status=status.value,
        progress={"stage": 0, "stages": len(request.stages), "step": 0, "steps": 0, "percent": 0},
        progress_percent=0,
        created_at=request.created_at,
        cancel_requested=False,
        request_uri=str(uri),
        sort_key=f"{request.created_at}#{execution_id}",
        user_status=user_status(request.user_id, status),
        pipeline_user=f"{request.pipeline_id}#{request.user_id}",
        **subscription_attributes(body),
    )
    deps.store.create(record)
    return record


def _enqueue(record: ExecutionRecord, deps: ExecutionDeps) -> None:
    message = InQueueMessage(executionId=record.execution_id, resUri=record.request_uri)
    deps.queues.send(deps.settings.backend_queues[record.backend], message.to_json())


def _fail_unsent(record: ExecutionRecord, deps: ExecutionDeps) -> None:
    error = {"code": "ENQUEUE_FAILED", "message": "the execution could not be queued"}
    try:
        if deps.store.finish(record, ExecutionStatus.FAILED, utc_now_iso(), error=error, started=False) is None:
            deps.store.delete(record.execution_id)
    except StoreUnavailable:
        deps.store.delete(record.execution_id)


# --- reads ---


def get_own_execution(execution_id: str, user_id: str, deps: ExecutionDeps) -> ExecutionRecord:
    """The caller's execution; NotFound for unknown ids and for other users' executions alike."""
    record = deps.store.get(execution_id) if _is_id(execution_id) else None
    if record is None or record.user_id != user_id:
        raise NotFound("no such execution")
    return record


def list_executions(
    user_id: str,
    deps: ExecutionDeps,
    *,
    limit: int,
    start: dict[str, Any] | None,
    status: str | None = None,
    pipeline_id: str | None = None,
) -> Page[Any]:
    """The caller's executions, newest first: all, by status, or of one pipeline."""
    if pipeline_id is not None:
        if not _is_id(pipeline_id):
            return Page([], None)
        check_cursor(start, {"executionId", "sortKey", "pipelineUser"}, "pipelineUser", f"{pipeline_id}#{user_id}")
        return deps.store.page_by_pipeline_user(pipeline_id, user_id, limit, start)
    if status is not None:
        if status not in ExecutionStatus.__members__:
            raise ValidationFailed(f"status must be one of {', '.join(ExecutionStatus)}")
        check_cursor(start, {"executionId", "sortKey", "userStatus"}, "userStatus", user_status(user_id, status))
        return deps.store.page_by_user_status(user_id, status, limit, start)
    check_cursor(start, {"executionId", "sortKey", "userId"}, "userId", user_id)
    return deps.store.page_by_user(user_id, limit, start)


def execution_result(execution_id: str, user_id: str, deps: ExecutionDeps) -> dict[str, Any]:
    """The outputs of a SUCCEEDED execution: text inline, images (and stored text) as presigned GETs."""
    record = get_own_execution(execution_id, user_id, deps)
    if record.status != ExecutionStatus.SUCCEEDED:
        raise Conflict(f"the execution is {record.status}; results exist once it has SUCCEEDED")
    settings = deps.settings
    location = S3Uri.parse(record.result_uri) if record.result_uri else None
    bucket = location.bucket if location else settings.results_bucket
    try:
        raw = deps.blobs.get_json(bucket, location.key if location else manifest_key(execution_id))
    except NotFound as exc:
        raise NotFound("the execution's results have expired") from exc
    manifest = ResultManifest.model_validate(raw)
    outputs = []
    for output in manifest.outputs:
        item: dict[str, Any] = {
            "stage": output.stage,
            "index": output.index,
            "type": output.type,
            "contentType": output.content_type,
        }
        if output.text is not None:
            item["text"] = output.text
        if output.key is not None and (output.type == "image" or output.text is None):
            item["url"] = deps.blobs.presign_get(bucket, output.key, settings.presign_ttl_s)
        outputs.append(item)
    return {"executionId": execution_id, "outputs": outputs, "expiresIn": settings.presign_ttl_s}


# --- cancel and delete ---

_CANCEL_ATTEMPTS = 5


def cancel_execution(execution_id: str, user_id: str, deps: ExecutionDeps) -> ExecutionRecord:
    """QUEUED -> CANCELLED at once; RUNNING -> cancelRequested; final -> Conflict. Races re-read and retry."""
    for _ in range(_CANCEL_ATTEMPTS):
        record = get_own_execution(execution_id, user_id, deps)
        status = ExecutionStatus(record.status)
        if status.is_final:
            raise Conflict(f"the execution is already {status}")
        if status is ExecutionStatus.QUEUED:
            changed = deps.store.cancel_queued(record, utc_now_iso())
            publish_execution_change(changed, EventKind.COMPLETED)
        else:
            changed = deps.store.request_cancel(record)
        if changed is not None:
            return changed
    raise ServiceUnavailable("the execution kept changing; try again")


def delete_execution(execution_id: str, user_id: str, deps: ExecutionDeps) -> None:
    """Cancel if still open, delete every object under the execution's prefix, then the record."""
    record = get_own_execution(execution_id, user_id, deps)
    if not ExecutionStatus(record.status).is_final:
        with contextlib.suppress(Conflict):  # it finished meanwhile: nothing to cancel
            cancel_execution(execution_id, user_id, deps)
    deps.blobs.delete_prefix(deps.settings.results_bucket, execution_prefix(execution_id))
    deps.store.delete(execution_id)
