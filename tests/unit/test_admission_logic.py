"""Quota decisions of fair-share admission (no network: the user's admission item is given)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from functions.executions import admission
from shared.errors import QuotaExceeded
from shared.models import AdmissionRecord
from tests.unit.execution_fakes import FakeStore, fake_deps

NOW = datetime(2026, 12, 1, 23, 59, 0, tzinfo=UTC)


class AdmissionStore(FakeStore):
    def __init__(self, item: AdmissionRecord | None) -> None:
        super().__init__(None)
        self.item = item

    def admission(self, user_id: str) -> AdmissionRecord | None:  # type: ignore[override]
        return self.item


def item(**fields: Any) -> AdmissionRecord:
    return AdmissionRecord("u1", **fields)


def test_nothing_used_passes() -> None:
    admission.check_quotas("u1", fake_deps(AdmissionStore(None), daily_gpu_seconds=10.0), NOW)


def test_the_queued_limit_counts_admitted_and_waiting() -> None:
    full = item(active_ids={"a", "b", "c", "d"}, waiting=96)
    with pytest.raises(QuotaExceeded) as exc:
        admission.check_quotas("u1", fake_deps(AdmissionStore(full)), NOW)
    assert exc.value.code == "QUOTA_EXCEEDED"
    assert exc.value.retry_after_s > 0
    admission.check_quotas("u1", fake_deps(AdmissionStore(item(active_ids={"a"}, waiting=98))), NOW)


def test_the_daily_gpu_quota_counts_today_only_and_resets_at_midnight() -> None:
    used = item(usage_day="2026-12-01", day_gpu_seconds=10.0, day_executions=3)
    with pytest.raises(QuotaExceeded) as exc:
        admission.check_quotas("u1", fake_deps(AdmissionStore(used), daily_gpu_seconds=10.0), NOW)
    assert exc.value.retry_after_s == 61  # until 00:00 UTC
    yesterday = item(usage_day="2026-11-30", day_gpu_seconds=99.0)
    admission.check_quotas("u1", fake_deps(AdmissionStore(yesterday), daily_gpu_seconds=10.0), NOW)
    admission.check_quotas("u1", fake_deps(AdmissionStore(used)), NOW)  # no daily quota configured
    assert admission.used_today(yesterday, NOW) == (0, 0.0)
    assert admission.used_today(used, NOW) == (3, 10.0)


def test_waiting_room_is_what_the_queued_limit_leaves_after_the_active_one() -> None:
    settings = fake_deps(FakeStore(None), max_active_executions=4, max_queued_executions=100).settings
    assert (admission.max_active(settings), admission.max_waiting(settings)) == (4, 96)
    tight = fake_deps(FakeStore(None), max_active_executions=8, max_queued_executions=5).settings
    assert (admission.max_active(tight), admission.max_waiting(tight)) == (5, 0)
