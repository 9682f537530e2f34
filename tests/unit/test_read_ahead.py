"""read_ahead: the next item is produced on a thread while the caller works on the current one."""

import threading
import time

import pytest

from jobs.publish import read_ahead


def test_items_come_in_order() -> None:
    assert list(read_ahead(iter(range(50)))) == list(range(50))
    assert list(read_ahead(iter([]))) == []


def recorded(count: int, produced: list[int]):
    """0 .. count - 1, each appended to ``produced`` as the producer takes it."""
    for number in range(count):
        produced.append(number)
        yield number


def test_no_more_than_limit_items_are_alive_at_once() -> None:
    produced: list[int] = []
    alive = []
    for number in read_ahead(recorded(6, produced), limit=2):
        time.sleep(0.05)  # the producer has all the time it wants to run ahead
        # done with everything before `number`: alive are `number` and what was produced after
        alive.append(len(produced) - number)
    assert max(alive) == 2
    assert alive[0] == 2  # it did read ahead


def test_a_producer_error_reaches_the_caller_after_the_items_before_it() -> None:
    def items():
        yield 1
        yield 2
        raise ValueError("block 3 is corrupt")

    seen = []
    with pytest.raises(ValueError, match="block 3 is corrupt"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_caller_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="send failed"):
        for number in read_ahead(recorded(1000, produced)):
            if number == 3:
                raise RuntimeError("send failed")
    assert threading.active_count() == before  # the producer thread has ended
    assert len(produced) <= 6


def test_limit_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        list(read_ahead(iter([1]), limit=1))
