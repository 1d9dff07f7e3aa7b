"""How the worker deals a polled batch to its writers: whole rooms, in order, evenly."""

from concurrent.futures import Future
from types import SimpleNamespace

from kafka import TopicPartition

from chat.bus.worker import MessageWorker


class RecordingWriter:
    def __init__(self) -> None:
        self.parts = []

    def submit(self, _apply, part, _writer) -> Future:
        self.parts.append(part)
        return Future()


def test_a_batch_is_split_by_room_keeping_each_rooms_order_and_balanced():
    worker = MessageWorker(group_id="g", topic="t", writers=2)
    worker._writers = [RecordingWriter(), RecordingWriter()]
    # As kafka-python polls: mostly a single partition, here holding four rooms of different sizes.
    sizes = {b"1": 40, b"2": 30, b"3": 20, b"4": 10}
    polled = {TopicPartition("t", 5): [SimpleNamespace(key=key, offset=n) for n in range(100)
                                       for key, size in sizes.items() if n < size]}
    assert len(worker._submit(polled)) == 2
    (first,), (second,) = (writer.parts for writer in worker._writers)
    assert sorted(len(part) for part in (first, second)) == [50, 50]
    for key in sizes:
        in_first = [r.offset for r in first if r.key == key]
        in_second = [r.offset for r in second if r.key == key]
        assert not (in_first and in_second), "a room split over two writers"
        assert (in_first or in_second) == list(range(sizes[key]))


def test_one_room_goes_to_one_writer_and_the_other_gets_nothing():
    worker = MessageWorker(group_id="g", topic="t", writers=2)
    worker._writers = [RecordingWriter(), RecordingWriter()]
    polled = {TopicPartition("t", 0): [SimpleNamespace(key=b"7", offset=n) for n in range(5)]}
    assert len(worker._submit(polled)) == 1
    assert [len(writer.parts) for writer in worker._writers] == [1, 0]
