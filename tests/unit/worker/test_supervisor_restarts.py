"""The supervisor restarts a crashed worker after a backoff that grows with repeated crashes and starts again from
its shortest after a healthy run, so an isolated crash's executions run again within seconds (issue 11)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.worker.test_fleet import Fleet


def test_a_healthy_run_resets_the_restart_backoff(tmp_path: Path) -> None:
    f = Fleet(tmp_path)
    f.supervisor.start()
    for _ in range(3):  # crash loop on slot 1: 1, 2, 4 s
        f.supervisor.children[1].crash()
        f.supervisor.tick()
        f.clock.now += f.supervisor.backoff[1]
        f.supervisor.tick()
    assert f.supervisor.backoff[1] == 8.0
    f.clock.now += 120  # the last one ran two minutes
    f.supervisor.children[1].crash()
    f.supervisor.tick()
    assert f.supervisor.backoff[1] == 2.0  # restarted after 1 s, the next crash in a row waits 2
    f.clock.now += 1.0
    f.supervisor.tick()
    assert len(f.spawned) == 2 + 4
