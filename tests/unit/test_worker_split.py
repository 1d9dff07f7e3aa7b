"""How the worker deals polled batches to its writers: whole rooms, in order, evenly, and a room
still being written stays with its writer."""

from concurrent.futures import Future
from types import SimpleNamespace

from kafka import TopicPartition

from chat.bus.worker import MessageWorker


class RecordingWriter:
    def __init__(self) -> None:
        self.parts = []
        self.writes = []

    def submit(self, _apply, part, _writer) -> Future:
        self.parts.append(part)
        self.writes.append(Future())
        return self.writes[-1]


def worker_with_recording_writers() -> MessageWorker:
    worker = MessageWorker(group_id="g", topic="t", writers=2)
    worker._writers = [RecordingWriter(), RecordingWriter()]
    return worker


def poll(sizes: dict[bytes, int], partition: int = 5) -> dict:
    """As kafka-python polls: mostly a single partition, its rooms' records interleaved."""
    return {TopicPartition("t", partition): [SimpleNamespace(key=key, offset=n, leader_epoch=0)
                                             for n in range(max(sizes.values()))
                                             for key, size in sizes.items() if n < size]}


def rooms_of(part) -> set[bytes]:
    return {record.key for record in part}


def test_a_batch_is_split_by_room_keeping_each_rooms_order_and_balanced():
    worker = worker_with_recording_writers()
    sizes = {b"1": 40, b"2": 30, b"3": 20, b"4": 10}
    assert len(worker._start(poll(sizes)).writes) == 2
    (first,), (second,) = (writer.parts for writer in worker._writers)
    assert sorted(len(part) for part in (first, second)) == [50, 50]
    for key in sizes:
        in_first = [r.offset for r in first if r.key == key]
        in_second = [r.offset for r in second if r.key == key]
        assert not (in_first and in_second), "a room split over two writers"
        assert (in_first or in_second) == list(range(sizes[key]))


def test_one_room_goes_to_one_writer_and_the_other_gets_nothing():
    worker = worker_with_recording_writers()
    assert len(worker._start(poll({b"7": 5}, partition=0)).writes) == 1
    assert [len(writer.parts) for writer in worker._writers] == [1, 0]


def test_a_room_still_being_written_stays_with_its_writer_in_the_next_batch():
    worker = worker_with_recording_writers()
    worker._writing.append(worker._start(poll({b"1": 10, b"2": 10})))
    a, b = worker._writers
    assert rooms_of(a.parts[0]) == {b"1"} and rooms_of(b.parts[0]) == {b"2"}
    # Both parts still being written: room 2 follows writer b, although balancing alone would have
    # given it to a; the new room 3 goes to the shorter part.
    worker._start(poll({b"2": 30, b"1": 1, b"3": 1}))
    assert rooms_of(a.parts[1]) == {b"1", b"3"} and rooms_of(b.parts[1]) == {b"2"}


def test_a_room_whose_part_is_written_may_move_to_balance_the_next_batch():
    worker = worker_with_recording_writers()
    worker._writing.append(worker._start(poll({b"1": 10, b"2": 10})))
    a, b = worker._writers
    b.writes[0].set_result(None)  # room 2's part is stored; room 1's is still being written
    worker._start(poll({b"1": 1, b"2": 10, b"3": 20}))
    assert rooms_of(a.parts[1]) == {b"1", b"2"} and rooms_of(b.parts[1]) == {b"3"}
    worker._writing.clear()
    a.writes[0].set_result(None)
    worker._writing.append(worker._start(poll({b"2": 30, b"1": 10})))  # nothing being written: balanced afresh
    assert rooms_of(a.parts[2]) == {b"2"} and rooms_of(b.parts[2]) == {b"1"}
