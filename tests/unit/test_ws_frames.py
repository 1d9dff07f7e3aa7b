"""The frames the fast frame path writes (daphne and uvicorn) are the WebSocket frames a client expects."""

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from config.ws_frames import text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        assert not reader.buffer, "bytes left over after the frame"
        return done.value
    raise AssertionError("the frame is incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 4000, 65535, 65536, 300_000])
def test_text_frames_of_every_length_class_parse_back_to_the_text(size):
    text = ("é" * size)[:size] if size % 2 else "x" * size
    frame = parse(text_frame(text))
    assert frame.opcode == Opcode.TEXT and frame.fin
    assert frame.data.decode() == text


def test_the_same_text_gets_the_same_bytes_and_another_text_its_own():
    one, other = "a" * 50, "b" * 50
    assert text_frame(one) is text_frame(one)
    assert parse(text_frame(other)).data.decode() == other
    assert parse(text_frame(one)).data.decode() == one
