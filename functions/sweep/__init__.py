"""The admission sweep: on a schedule, admits what a lost event left waiting and times out stale waiters."""
