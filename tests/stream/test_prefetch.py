"""Reading ahead on a thread: the same items, in order, with the producer's errors where they belong."""

from __future__ import annotations

import threading
import time

import pytest

from streamguard.stream.prefetch import prefetched


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_come_in_order_and_all_of_them(depth):
    assert list(prefetched(iter(range(1000)), depth)) == list(range(1000))


def test_the_producer_runs_ahead_on_another_thread_by_at_most_depth_items():
    produced: list[int] = []
    threads: set[str] = set()

    def source():
        for i in range(10):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    items = prefetched(source(), depth=2)
    assert next(items) == 0
    # The producer fills the queue (2 items) and holds a third, waiting to hand it over: never more.
    for _ in range(500):  # up to 5 s for the thread to be scheduled on a loaded machine
        if len(produced) >= 4:
            break
        time.sleep(0.01)
    assert len(produced) == 4
    assert threads == {"streamguard-prefetch"}
    assert list(items) == list(range(1, 10))


def test_an_error_of_the_producer_is_raised_where_its_item_would_have_come():
    def source():
        yield 1
        yield 2
        raise ValueError("row 3 is broken")

    items = prefetched(source(), depth=4)
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(ValueError, match="row 3 is broken"):
        next(items)


def test_a_consumer_that_stops_early_stops_the_producer_and_closes_its_source():
    closed = threading.Event()

    def source():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = prefetched(source(), depth=2)
    assert next(items) == 0
    items.close()  # what a `for` loop left by an exception does
    assert closed.wait(5.0)
    assert not any(t.name == "streamguard-prefetch" for t in threading.enumerate())
