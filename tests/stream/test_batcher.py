import pytest

from streamguard.stream.batcher import MicroBatcher


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_releases_on_size_or_deadline():
    clock = Clock()
    batcher = MicroBatcher(max_size=10, max_delay_s=0.5, clock=clock)
    assert not batcher.due()
    batcher.add("a", 4)
    assert not batcher.due()
    clock.now = 0.6
    assert batcher.due()
    assert list(batcher.take()) == ["a"] and batcher.pending_rows == 0
    batcher.add("b", 6)
    batcher.add("c", 4)
    assert batcher.due()  # size reached before the deadline


def test_rejects_empty_batches():
    with pytest.raises(ValueError):
        MicroBatcher(0, 1.0)
