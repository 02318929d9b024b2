"""One pass of the admission sweep over the waiting index (every partition, oldest first).

A waiting execution past its deadline (createdAt + execution_deadline_s) fails with TIMEOUT, freeing its place;
every other user seen waiting gets `admit_next`, which admits as many as that user's set has room for (and
repairs a set that a lost release left full). Everything it does is conditional, so it may run while events
are applied, and twice at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from functions.executions import admission
from functions.executions.store import WAITING_SHARDS
from shared.errors import StagehubError
from shared.messages import ExecutionStatus, utc_now_iso

if TYPE_CHECKING:
    from functions.executions.logic import ExecutionDeps

PAGE = 500  # waiting executions read per partition and pass


@dataclass
class SweepReport:
    timed_out: list[str] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)
    users: int = 0


def sweep(deps: ExecutionDeps, now: datetime | None = None) -> SweepReport:
    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(seconds=deps.settings.execution_deadline_s)).isoformat().replace("+00:00", "Z")
    report, users = SweepReport(), set()
    for shard in range(WAITING_SHARDS):
        for waiting in deps.store.waiting_page(f"w#{shard}", PAGE):
            if waiting.created_at < cutoff:
                if _time_out(waiting.execution_id, deps):
                    report.timed_out.append(waiting.execution_id)
            else:
                users.add(waiting.user_id)
    report.users = len(users)
    for user_id in sorted(users):
        try:
            report.admitted += admission.admit_next(user_id, deps, seen_waiting=True)
        except StagehubError:
            continue  # the next pass tries again
    return report


def _time_out(execution_id: str, deps: ExecutionDeps) -> bool:
    record = deps.store.get(execution_id)
    if record is None or not record.waiting_shard:
        return False
    if not deps.store.finish_waiting(record, ExecutionStatus.FAILED, utc_now_iso(), error=admission.TIMEOUT):
        return False
    admission.ended_quietly(record.user_id, execution_id, deps)
    return True
