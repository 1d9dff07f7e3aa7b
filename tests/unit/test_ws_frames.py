"""The frames the fast frame path writes (daphne and uvicorn) are the WebSocket frames a client expects."""

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from config.ws_frames import text_frame, text_frames


def parse_all(data: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("a frame is incomplete")
    return frames


def parse(data: bytes) -> Frame:
    frames = parse_all(data)
    assert len(frames) == 1, f"{len(frames)} frames where one was expected"
    return frames[0]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 4000, 65535, 65536, 300_000])
def test_text_frames_of_every_length_class_parse_back_to_the_text(size):
    text = ("é" * size)[:size] if size % 2 else "x" * size
    frame = parse(text_frame(text))
    assert frame.opcode == Opcode.TEXT and frame.fin
    assert frame.data.decode() == text


def test_a_run_of_texts_is_their_frames_back_to_back_in_order():
    texts = ("first", "é" * 200, "x" * 70_000)
    frames = parse_all(text_frames(texts))
    assert [frame.data.decode() for frame in frames] == list(texts)
    assert all(frame.opcode == Opcode.TEXT and frame.fin for frame in frames)


def test_the_same_run_gets_the_same_bytes_and_another_run_its_own():
    one, other = ("a" * 50,), ("b" * 50, "c")
    assert text_frames(one) is text_frames(one)
    assert [frame.data.decode() for frame in parse_all(text_frames(other))] == list(other)
    assert parse(text_frames(one)).data.decode() == one[0]
