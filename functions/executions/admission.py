"""Fair share by admission (API.md "Per-user fairness"): at most `max_active_executions` of a user's executions
are in a backend's queue or running; the others wait in DynamoDB, in submission order, and are admitted (their
in-queue message sent) as that user's earlier executions end. Quotas: `max_queued_executions` non-final
executions per user, and an optional daily GPU-seconds budget.

The design, and why it admits exactly once:
- One admission item per user (`AdmissionRecord`) holds `activeIds`, the string set of the user's admitted and
  not yet ended executions, and `waiting`, how many wait. A waiting execution carries `waitingShard`, which puts
  it into the sparse waiting index (read by the sweep) and, projected into the user-status index, marks it in
  the user's QUEUED partition, whose order (createdAt#id) is the submission order.
- Submission writes the execution and the admission item in one transaction: admitted at once when the set has
  room and nobody waits (so nobody is overtaken), else waiting, if fewer than `max_queued - max_active` wait
  (so admitted + waiting never exceeds `max_queued`); neither: 429 QUOTA_EXCEEDED.
- Admitting a waiting execution is one transaction of two conditional updates: the execution must still be
  waiting (QUEUED, `waitingShard` present, not deleted) and the set must have room. Two admitters racing for
  one execution (duplicate events, the sweep) cannot both win; one racing for two cannot overfill the set.
  Only the winner sends the in-queue message; a failed send puts the execution back to waiting.
- Every end (results consumer, DLQ handler, cancel, delete, deadline) is a conditional write that one caller
  wins; the winner removes the id from the set (idempotent: deleting an absent element is a no-op), counts the
  end into today's usage, and admits the user's next waiting executions.
- What a crash between those steps leaves behind is repaired, not lost: an id left in a full set is dropped
  once its execution is final or gone (checked whenever the set is full), and the sweep (functions/sweep)
  admits whatever a lost event left waiting and fails waiting executions past their deadline with TIMEOUT.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from functions.executions.store import Admission, WaitingExecution
from shared.errors import QuotaExceeded, StagehubError
from shared.messages import ExecutionStatus, InQueueMessage, utc_now_iso

if TYPE_CHECKING:
    from functions.executions.logic import ExecutionDeps
    from shared.models import AdmissionRecord, ExecutionRecord
    from shared.settings import Settings

log = logging.getLogger("stagehub.admission")
ADMISSION_TTL_DAYS = 35  # an idle user's admission item goes; it is recreated on the next submission
TIMEOUT = {"code": "TIMEOUT", "message": "the execution did not start before its deadline"}


def max_active(settings: Settings) -> int:
    return min(settings.max_active_executions, settings.max_queued_executions)


def max_waiting(settings: Settings) -> int:
    return settings.max_queued_executions - max_active(settings)


def today(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()


def seconds_until_midnight(now: datetime) -> int:
    midnight = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1, int((midnight - now).total_seconds()) + 1)


def _ttl(now: datetime) -> datetime:
    return now + timedelta(days=ADMISSION_TTL_DAYS)


def used_today(admission: AdmissionRecord | None, now: datetime) -> tuple[int, float]:
    """(executions ended today, GPU seconds used today) from the user's admission item."""
    if admission is None or admission.usage_day != today(now):
        return 0, 0.0
    return int(admission.day_executions or 0), float(admission.day_gpu_seconds or 0)


def check_quotas(user_id: str, deps: ExecutionDeps, now: datetime) -> None:
    """Refuse a submission early (before anything is written) when a quota is used up."""
    settings = deps.settings
    admission = deps.store.admission(user_id)
    if settings.daily_gpu_seconds is not None:
        _, gpu_seconds = used_today(admission, now)
        if gpu_seconds >= settings.daily_gpu_seconds:
            raise QuotaExceeded(
                f"the daily GPU quota ({settings.daily_gpu_seconds:g} s) is used up until 00:00 UTC",
                retry_after_s=seconds_until_midnight(now),
            )
    if admission is not None:
        non_final = len(admission.active_ids or ()) + int(admission.waiting or 0)
        if non_final >= settings.max_queued_executions:
            raise _too_many(settings)


def _too_many(settings: Settings) -> QuotaExceeded:
    # A slot frees when one of the user's executions ends: ask again in about a stage's time.
    return QuotaExceeded(
        f"at most {settings.max_queued_executions} executions may be queued or running per user",
        retry_after_s=30,
    )


def enter(record: ExecutionRecord, deps: ExecutionDeps, now: datetime) -> bool:
    """Write a new execution: admitted at once (True) or waiting (False); QuotaExceeded when neither may be."""
    store, settings = deps.store, deps.settings
    for _ in range(3):
        if store.create_admitted(record, max_active(settings), _ttl(now)):
            record.admitted_at = utc_now_iso()
            return True
        if store.create_waiting(record, max_waiting(settings), _ttl(now)):
            return False
        # Neither: the user may be at the quota, or the admission item changed between the two tries.
        admission = store.admission(record.user_id)
        if admission is not None and int(admission.waiting or 0) >= max_waiting(settings):
            raise _too_many(settings)
    raise _too_many(settings)


def send(waiting: WaitingExecution, deps: ExecutionDeps) -> None:
    """The admitted execution's in-queue message (QueueUnavailable when SQS fails)."""
    message = InQueueMessage(executionId=waiting.execution_id, resUri=waiting.request_uri)
    deps.queues.send(deps.settings.backend_queues[waiting.backend], message.to_json())


def admit_next(user_id: str, deps: ExecutionDeps, *, seen_waiting: bool = False) -> list[str]:
    """Admit the user's oldest waiting executions while the set has room; returns the ids admitted here.

    `seen_waiting`: the caller saw one of the user's executions waiting (the sweep), so the index is asked even
    if the `waiting` count says none (it never should, but the sweep must not trust what it repairs).
    """
    store, settings = deps.store, deps.settings
    admitted: list[str] = []
    gone: set[str] = set()
    for _ in range(max_active(settings) + 4):  # bounded: each round admits one or learns why not
        admission = store.admission(user_id)
        if admission is None or (int(admission.waiting or 0) <= 0 and not seen_waiting):
            break
        if len(admission.active_ids or ()) >= max_active(settings) and not _forget_ended(
            user_id, set(admission.active_ids or ()), deps
        ):
            break
        waiting = store.oldest_waiting(user_id, frozenset(gone.union(admitted)))
        if waiting is None:
            break  # the index has not caught up yet: the sweep comes back to it
        now = datetime.now(UTC)
        at = utc_now_iso()
        outcome = store.admit(waiting, max_active(settings), at, _ttl(now))
        if outcome is Admission.ADMITTED:
            try:
                send(waiting, deps)
            except StagehubError:
                store.unadmit(waiting, at)
                raise
            admitted.append(waiting.execution_id)
        elif outcome is Admission.GONE:
            gone.add(waiting.execution_id)
    return admitted


def _forget_ended(user_id: str, active: set[str], deps: ExecutionDeps) -> bool:
    """Repair a full set: drop ids whose execution ended or is gone; time out admitted ones past their deadline.

    True when a slot was freed.
    """
    now = datetime.now(UTC)
    records = {r.execution_id: r for r in deps.store.batch_get(sorted(active))}
    ended = {i for i in active if i not in records or ExecutionStatus(records[i].status).is_final}
    deadline = (now - timedelta(seconds=deps.settings.execution_deadline_s)).isoformat().replace("+00:00", "Z")
    for record in records.values():
        if record.status == ExecutionStatus.QUEUED and record.created_at < deadline:
            at = utc_now_iso()
            if deps.store.finish(
                record.execution_id,
                user_id,
                ExecutionStatus.FAILED,
                at,
                error=TIMEOUT,
                from_status=ExecutionStatus.QUEUED,
            ):
                ended.add(record.execution_id)
    deps.store.forget_active(user_id, ended)
    return bool(ended)


def ended(user_id: str, execution_id: str, deps: ExecutionDeps, gpu_seconds: float = 0.0) -> list[str]:
    """An execution reached a final state (this caller's write won): free its slot, count it, admit the next."""
    now = datetime.now(UTC)
    deps.store.release(user_id, execution_id, gpu_seconds, today(now), _ttl(now))
    return admit_next(user_id, deps)


def ended_quietly(user_id: str, execution_id: str, deps: ExecutionDeps, gpu_seconds: float = 0.0) -> None:
    """`ended` where its caller's own write already succeeded: a failure here is repaired later, not reported."""
    try:
        ended(user_id, execution_id, deps, gpu_seconds)
    except StagehubError:
        log.warning("releasing %s of %s failed; the sweep repairs it", execution_id, user_id, exc_info=True)


def admit_next_quietly(user_id: str, deps: ExecutionDeps) -> None:
    try:
        admit_next(user_id, deps)
    except StagehubError:
        log.warning("admitting the next execution of %s failed; the sweep retries", user_id, exc_info=True)


def usage_view(user_id: str, deps: ExecutionDeps) -> dict[str, Any]:
    """`GET /users/me/usage` (API.md "Usage")."""
    now, settings = datetime.now(UTC), deps.settings
    admission = deps.store.admission(user_id)
    executions, gpu_seconds = used_today(admission, now)
    return {
        "day": today(now),
        "executions": executions,
        "gpuSeconds": round(gpu_seconds, 3),
        "active": len(admission.active_ids or ()) if admission else 0,
        "waiting": max(0, int(admission.waiting or 0)) if admission else 0,
        "limits": {
            "maxActiveExecutions": settings.max_active_executions,
            "maxQueuedExecutions": settings.max_queued_executions,
            "dailyGpuSeconds": settings.daily_gpu_seconds,
        },
    }
