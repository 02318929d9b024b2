"""Executions: submit (validate, resolve, persist, enqueue), read, list, cancel, delete, and fetch results.

Plain Python: no API Gateway here. Collaborators (the record store, S3, SQS, settings) come in `ExecutionDeps`.
Submission order keeps nothing lost: request.json, then the QUEUED record (admitted, or waiting for admission:
see `functions.executions.admission`), then the in-queue message; a failed send turns an admitted record FAILED,
so no record waits QUEUED for a message that does not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from functions.executions import admission
from functions.executions.backends import BackendStats
from functions.executions.schemas import SubmitExecution
from functions.executions.store import ExecutionStore, StoreUnavailable, user_status
from functions.pagination import Page, check_cursor
from functions.webhooks.events import EventKind, publish_execution_change
from functions.webhooks.subscription import check_subscription, subscription_attributes
from shared import resources as res
from shared.errors import (
    Conflict,
    IdempotencyMismatch,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
    StagehubError,
    ValidationFailed,
)
from shared.ids import is_id as _is_id
from shared.messages import ExecutionStatus, InQueueMessage, utc_now_iso
from shared.models import ExecutionRecord
from shared.queues import QueueClient
from shared.settings import Settings
from shared.stages import (
    OUTPUT_KINDS,
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
    previous_problem,
    rendered_bytes,
    request_key,
    template_variables,
    with_model_defaults,
)
from shared.storage import BlobStore, S3Uri
from shared.uploads import UploadRefused, check_image, own_upload, read_prompt

IDEMPOTENCY_KEY_MAX = 255
MAX_VARIABLES = 64
VARIABLES_MAX_BYTES = 64 * 1024
IMAGE_VARIABLE = "image"
# How long a request that lost an Idempotency-Key race waits for the winner's record to appear.
IDEMPOTENCY_WAIT_S = 3.0


@dataclass(frozen=True)
class ExecutionDeps:
    settings: Settings
    store: ExecutionStore
    blobs: BlobStore
    queues: QueueClient
    backends: BackendStats | None = None  # GET /backends only


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
    request_hash = _request_hash(submission)
    now = datetime.now(UTC)
    if key is not None:
        replayed = _replay(key, submission.user_id, request_hash, deps, now)
        if replayed is not None:
            return Submitted(replayed, created=False)
    check_subscription(submission.body, deps.settings)
    stages = load_pipeline_stages(submission.pipeline_id, deps)
    execution_id = str(uuid.uuid4())
    request = resolve_request(execution_id, submission, stages, deps)
    admission.check_quotas(submission.user_id, deps, now)
    if key is not None and not deps.store.claim_idempotency_key(
        key, execution_id, request_hash, now + timedelta(seconds=deps.settings.idempotency_ttl_s), now
    ):
        return Submitted(_await_winner(key, submission.user_id, request_hash, deps, now), created=False)
    try:
        record, admitted = _persist(request, deps, now, submission.body)
    except StagehubError:
        if key is not None:
            deps.store.release_idempotency_key(key, execution_id)
        raise
    if not admitted:
        # It waits behind the user's earlier executions; one of them may have ended meanwhile.
        admission.admit_next_quietly(submission.user_id, deps)
        return Submitted(record, created=True)
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


def _request_hash(submission: Submission) -> str:
    """What an Idempotency-Key promises to repeat: the pipeline and the body (canonical JSON, SHA-256)."""
    body = submission.body.model_dump(mode="json", by_alias=True, exclude_none=True)
    canonical = json.dumps({"pipelineId": submission.pipeline_id, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _claimed_execution(
    key: str, user_id: str, request_hash: str, deps: ExecutionDeps, now: datetime
) -> tuple[bool, ExecutionRecord | None]:
    """(whether the key is claimed, the claim's execution once written); 422 when the request differs."""
    claim = deps.store.idempotency_claim(key, now)
    if claim is None:
        return False, None
    if claim.request_hash is not None and claim.request_hash != request_hash:
        raise IdempotencyMismatch("this Idempotency-Key was used with another pipeline or body")
    record = deps.store.get(claim.execution_id)
    if record is None or record.user_id != user_id or record.deleted_at:
        return True, None
    return True, record


def _replay(key: str, user_id: str, request_hash: str, deps: ExecutionDeps, now: datetime) -> ExecutionRecord | None:
    claimed, record = _claimed_execution(key, user_id, request_hash, deps, now)
    if claimed and record is None:
        # The key's execution was created and then deleted by its owner.
        raise Conflict("the execution created with this Idempotency-Key was deleted")
    return record


def _await_winner(key: str, user_id: str, request_hash: str, deps: ExecutionDeps, now: datetime) -> ExecutionRecord:
    """Another request with the same key won the claim: answer with its execution once it is written."""
    deadline = time.monotonic() + IDEMPOTENCY_WAIT_S
    while True:
        _claimed, record = _claimed_execution(key, user_id, request_hash, deps, now)
        if record is not None:
            return record
        if time.monotonic() > deadline:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly")
        time.sleep(0.05)


def load_pipeline_stages(pipeline_id: str, deps: ExecutionDeps) -> list[StageDefinition]:
    """The stages of a pipeline (its definition JSON in S3); NotFound for an unknown pipeline."""
    if not _is_id(pipeline_id):
        raise NotFound("no such pipeline")
    definition_key = deps.store.pipeline_definition_key(pipeline_id)
    if definition_key is None:
        raise NotFound("no such pipeline")
    definition = deps.blobs.get_json(deps.settings.pipelines_bucket, definition_key)
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
    _check_templates(stages, _prompt_templates(stages, deps, problems), body.variables, problems)
    image_uri = _check_image(body.variables.get(IMAGE_VARIABLE), submission.user_id, deps, problems)
    needing = _stages_needing_an_image(stages)
    if needing and IMAGE_VARIABLE not in body.variables:
        problems.add(
            ["body", "variables", IMAGE_VARIABLE],
            f"stage {needing[0]} is img2img with no image before it: variables.image is required",
        )
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


def _prompt_templates(stages: list[StageDefinition], deps: ExecutionDeps, problems: _Problems) -> list[str | None]:
    """Each stage's prompt template: inline, or the referenced upload read and checked (None after a problem).

    Pipeline creation checked that a referenced prompt is its author's upload; here it is read again, so an
    object replaced or grown since is refused too.
    """
    templates: list[str | None] = []
    for index, stage in enumerate(stages):
        if stage.inline:
            templates.append(stage.body)
            continue
        try:
            templates.append(read_prompt(deps.blobs, S3Uri.parse(stage.body)))
        except (ValueError, UploadRefused) as exc:
            problems.add(["stages", index, "body"], f"the stage's prompt upload cannot be used: {exc}")
            templates.append(None)
    return templates


def _check_templates(
    stages: list[StageDefinition], templates: list[str | None], variables: dict[str, str], problems: _Problems
) -> None:
    stage_types = [stage.type for stage in stages]
    for index, template in enumerate(templates):
        if template is None:
            continue
        for name in sorted(template_variables(template)):
            if name == PREVIOUS:
                message = previous_problem(stage_types, index)
                if message is not None:
                    problems.add(["stages", index, "body"], message)
            elif name not in variables:
                problems.add(["body", "variables", name], f"stage {index} uses {{{{{name}}}}}: a value is required")
        if rendered_bytes(template, variables) > PROMPT_MAX_BYTES:
            problems.add(
                ["body", "variables"],
                f"stage {index}'s prompt with its variables filled is over {PROMPT_MAX_BYTES} bytes",
            )


def _stages_needing_an_image(stages: list[StageDefinition]) -> list[int]:
    """img2img stages with no image stage right before them: they take variables.image."""
    return [
        index
        for index, stage in enumerate(stages)
        if stage.type == "img2img" and (index == 0 or OUTPUT_KINDS[stages[index - 1].type] != "image")
    ]


def _check_image(uri: str | None, user_id: str, deps: ExecutionDeps, problems: _Problems) -> str | None:
    """variables.image must be the caller's own upload, as declared, a PNG, JPEG or WebP within the pixel limits."""
    if uri is None:
        return None
    try:
        location = own_upload(uri, user_id, deps.settings.uploads_bucket)
        check_image(deps.blobs, location, deps.settings.upload_max_bytes)
    except UploadRefused as exc:
        problems.add(["body", "variables", IMAGE_VARIABLE], str(exc))
        return None
    return str(location)


def _persist(
    request: ExecutionRequest, deps: ExecutionDeps, now: datetime, body: SubmitExecution | None = None
) -> tuple[ExecutionRecord, bool]:
    """request.json, then the QUEUED record with its admission; (record, admitted at once)."""
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
        # Consistent with the results' lifecycle: the record outlives its outputs by a day at most.
        expires_at=now + timedelta(days=settings.execution_record_ttl_days),
    )
    try:
        return record, admission.enter(record, deps, now)
    except QuotaExceeded:
        with contextlib.suppress(StagehubError):
            deps.blobs.delete_prefix(settings.results_bucket, execution_prefix(execution_id))
        raise


def _enqueue(record: ExecutionRecord, deps: ExecutionDeps) -> None:
    message = InQueueMessage(executionId=record.execution_id, resUri=record.request_uri)
    deps.queues.send(deps.settings.backend_queues[record.backend], message.to_json())


def _fail_unsent(record: ExecutionRecord, deps: ExecutionDeps) -> None:
    error = {"code": "ENQUEUE_FAILED", "message": "the execution could not be queued"}
    try:
        failed = deps.store.finish(
            record.execution_id,
            record.user_id,
            ExecutionStatus.FAILED,
            utc_now_iso(),
            error=error,
            from_status=ExecutionStatus.QUEUED,
        )
    except StoreUnavailable:
        failed = None
    if failed is None:
        deps.store.delete(record.execution_id)
    admission.ended_quietly(record.user_id, record.execution_id, deps)


# --- reads ---


def get_own_execution(execution_id: str, user_id: str, deps: ExecutionDeps) -> ExecutionRecord:
    """The caller's execution; NotFound for unknown, deleted and other users' executions alike."""
    record = deps.store.get(execution_id) if _is_id(execution_id) else None
    if record is None or record.user_id != user_id or record.deleted_at:
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
    """QUEUED -> CANCELLED at once (waiting or admitted); RUNNING -> cancelRequested; final -> Conflict.

    Races re-read and retry. A cancelled queued execution frees its slot at once (an admitted one's message
    is skipped by the worker, which sees the final status).
    """
    for _ in range(_CANCEL_ATTEMPTS):
        record = get_own_execution(execution_id, user_id, deps)
        status = ExecutionStatus(record.status)
        if status.is_final:
            raise Conflict(f"the execution is already {status}")
        at = utc_now_iso()
        changed: ExecutionRecord | None
        if status is ExecutionStatus.RUNNING:
            changed = deps.store.request_cancel(record)
        elif record.waiting_shard:
            changed = record if deps.store.finish_waiting(record, ExecutionStatus.CANCELLED, at) else None
            if changed is not None:
                changed = get_own_execution(execution_id, user_id, deps)
        else:
            changed = deps.store.cancel_queued(record, at)
        if changed is not None:
            if status is ExecutionStatus.QUEUED:
                publish_execution_change(changed, EventKind.COMPLETED)
                admission.ended_quietly(user_id, execution_id, deps)
            return changed
    raise ServiceUnavailable("the execution kept changing; try again")


def delete_execution(execution_id: str, user_id: str, deps: ExecutionDeps) -> None:
    """Tombstone (deletedAt), end it if still open, purge its results, then remove the record (contract C2).

    From the tombstone on, no out-queue event applies to the record and the worker writes nothing more for
    it; a finished event that was already on its way makes the results consumer purge the prefix again.
    """
    record = get_own_execution(execution_id, user_id, deps)
    at = utc_now_iso()
    if deps.store.tombstone(execution_id, at) is None:
        raise NotFound("no such execution")
    if not ExecutionStatus(record.status).is_final:
        if record.waiting_shard:
            ended = deps.store.finish_waiting(record, ExecutionStatus.CANCELLED, at)
        else:
            ended = deps.store.end_deleted(record, at) is not None
        if ended:
            admission.ended_quietly(user_id, execution_id, deps)
    deps.blobs.delete_prefix(deps.settings.results_bucket, execution_prefix(execution_id))
    deps.store.delete(execution_id)


# --- wait (API.md "Wait": Prefer: wait=N) ---

WAIT_MAX_S = 25
# Reads while waiting: growing intervals, then every 4 s, so a 25 s wait costs 10 reads at most.
_WAIT_INTERVALS_S = (0.25, 0.5, 1.0, 2.0, 3.0)
_WAIT_LAST_INTERVAL_S = 4.0


def wait_intervals(wait_s: float) -> list[float]:
    """The pauses between the reads of a wait of `wait_s` seconds (they add up to it)."""
    pauses: list[float] = []
    left = wait_s
    for step in (*_WAIT_INTERVALS_S, *([_WAIT_LAST_INTERVAL_S] * int(wait_s // _WAIT_LAST_INTERVAL_S + 1))):
        if left <= 0:
            break
        pauses.append(min(step, left))
        left -= pauses[-1]
    return pauses


def wait_until_final(
    record: ExecutionRecord, deps: ExecutionDeps, wait_s: float, sleep: Any = time.sleep
) -> ExecutionRecord:
    """The execution once final, or as it is after `wait_s` seconds; one consistent read per pause."""
    for pause in wait_intervals(wait_s):
        if ExecutionStatus(record.status).is_final:
            break
        sleep(pause)
        current = deps.store.get(record.execution_id)
        if current is None or current.deleted_at:
            break  # deleted while waiting: answer with what was seen last
        record = current
    return record


# --- usage and backends ---


def user_usage(user_id: str, deps: ExecutionDeps) -> dict[str, Any]:
    return admission.usage_view(user_id, deps)


def backend_status(deps: ExecutionDeps) -> dict[str, Any]:
    if deps.backends is None:
        raise ServiceUnavailable("backend figures are not available here")
    return {"items": deps.backends.all()}
