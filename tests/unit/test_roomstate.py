"""Pure helpers of the room state."""

import json

from chat import protocol
from chat.limits import parse_rate
from chat.roomstate import split_message_frame


def test_parse_rate():
    assert parse_rate("20/10s") == (20, 2.0)
    assert parse_rate("60/1m") == (60, 1.0)
    assert parse_rate("5/s") == (5, 5.0)


def test_split_message_frame_puts_the_seq_where_it_belongs():
    message = protocol.message_object(
        id="00000000-0000-0000-0000-000000000001", room="r", seq=0, author_id=1, author_username="a",
        body='he said "seq":1', created_at="2026-01-01T00:00:00Z", edited_at=None, client_id="c",
    )
    head, tail = split_message_frame(message)
    frame = json.loads(head + "1234567890123456" + tail)
    assert frame["seq"] == 1234567890123456
    assert frame["type"] == "message" and frame["body"] == 'he said "seq":1'
