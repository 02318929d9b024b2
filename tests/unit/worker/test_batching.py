"""The batch collector's rules, on a fake clock: grouping by key, the window, the size cap, urgency, draining."""

from __future__ import annotations

import pytest

from gpu_worker.batching import BatchCollector


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def collector(clock: FakeClock, window_s: float = 0.05, max_size: int = 4) -> BatchCollector[tuple[str, int]]:
    return BatchCollector(lambda item: item[0], window_s=window_s, max_size=max_size, clock=clock)


def test_a_batch_waits_for_its_window(clock: FakeClock) -> None:
    batches = collector(clock)
    batches.add(("a", 1))
    assert batches.take_ready() is None
    clock.now += 0.049
    assert batches.take_ready() is None
    clock.now += 0.001
    assert batches.take_ready() == [("a", 1)]
    assert len(batches) == 0


def test_items_of_one_key_arriving_within_the_window_run_together(clock: FakeClock) -> None:
    batches = collector(clock)
    batches.add(("a", 1))
    clock.now += 0.02
    batches.add(("a", 2))
    clock.now += 0.03
    assert batches.take_ready() == [("a", 1), ("a", 2)]


def test_keys_never_mix(clock: FakeClock) -> None:
    batches = collector(clock)
    for item in [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("c", 1)]:
        batches.add(item)
    clock.now += 1
    taken = [batches.take_ready() for _ in range(3)]
    assert taken == [[("a", 1), ("a", 2)], [("b", 1), ("b", 2)], [("c", 1)]]
    assert batches.take_ready() is None


def test_a_full_batch_is_ready_before_its_window(clock: FakeClock) -> None:
    batches = collector(clock, max_size=3)
    for n in range(3):
        batches.add(("a", n))
    assert batches.take_ready() == [("a", 0), ("a", 1), ("a", 2)]


def test_batches_are_capped_and_leftovers_go_next_without_a_new_window(clock: FakeClock) -> None:
    batches = collector(clock, max_size=2)
    for n in range(5):
        batches.add(("a", n))
    assert batches.take_ready() == [("a", 0), ("a", 1)]
    assert batches.take_ready() == [("a", 2), ("a", 3)]
    assert batches.take_ready() == [("a", 4)]  # already late: no second window


def test_the_oldest_ready_key_goes_first(clock: FakeClock) -> None:
    batches = collector(clock)
    batches.add(("late", 1))
    clock.now += 0.03
    batches.add(("early-but-newer", 1))
    clock.now += 0.02
    assert batches.take_ready() == [("late", 1)]  # its window elapsed; the other's has not
    assert batches.take_ready() is None


def test_urgent_items_skip_the_window(clock: FakeClock) -> None:
    """A running execution's next stage should not wait 50 ms more for company."""
    batches = collector(clock)
    batches.add(("a", 1), urgent=True)
    assert batches.take_ready() == [("a", 1)]


def test_max_size_one_disables_batching(clock: FakeClock) -> None:
    batches = collector(clock, max_size=1)
    batches.add(("a", 1))
    batches.add(("a", 2))
    assert batches.take_ready() == [("a", 1)]
    assert batches.take_ready() == [("a", 2)]


def test_drain_returns_everything_waiting(clock: FakeClock) -> None:
    batches = collector(clock)
    for item in [("a", 1), ("b", 1), ("a", 2)]:
        batches.add(item)
    assert sorted(batches.drain()) == [("a", 1), ("a", 2), ("b", 1)]
    assert len(batches) == 0
    assert batches.take_ready() is None


def test_next_batch_gives_up_after_its_timeout_when_nothing_is_queued(clock: FakeClock) -> None:
    assert collector(clock).next_batch(timeout_s=0.01) is None


def test_max_size_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_size"):
        collector(clock, max_size=0)
