"""Frame parsing and building: every contract error code for bad client frames."""

import json

import pytest

from chat import protocol
from chat.protocol import ProtocolError


def parse_error(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "invalid_json"),
        ("{", "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
        ("[]", "invalid_frame"),
        ('"message.send"', "invalid_frame"),
        ("{}", "invalid_frame"),
        ('{"type": 3}', "invalid_frame"),
        ('{"type": "shout"}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi"}', "invalid_frame"),
        ('{"type": "message.send", "body": 5, "client_id": "a"}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi", "client_id": ""}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi", "client_id": "' + "x" * 65 + '"}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi", "client_id": "a\\u0000b"}', "invalid_frame"),
        ('{"type": "typing", "active": "yes"}', "invalid_frame"),
        ('{"type": "resume", "after": true}', "invalid_frame"),
        ('{"type": "resume", "after": 1.5}', "invalid_frame"),
        ('{"type": "resume", "after": -1}', "invalid_frame"),
        ('{"type": "resume", "after": 9223372036854775808}', "invalid_frame"),  # past Postgres's bigint
        ('{"type": "read", "seq": 9223372036854775808}', "invalid_frame"),
        ('{"type": "message.edit", "id": "x"}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi", "client_id": "a", "reply_to": 5}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi", "client_id": "a", "attachments": "a1"}', "invalid_frame"),
        ('{"type": "message.send", "body": "hi", "client_id": "a", "attachments": [1]}', "invalid_frame"),
        ('{"type": "message.send", "body": "", "client_id": "a", "attachments": ' + json.dumps(["a"] * 11) + "}",
         "invalid_frame"),
        ('{"type": "reaction.add", "id": "x"}', "invalid_frame"),
    ],
)
def test_bad_frames_get_contract_codes(text, code):
    error = parse_error(text)
    assert error.code == code
    assert error.detail


def test_good_frames_parse_to_their_fields():
    frame = protocol.parse(json.dumps({"type": "message.send", "body": "hi", "client_id": "c1", "extra": 1}))
    assert frame.type == "message.send"
    assert frame.fields == {"body": "hi", "client_id": "c1", "reply_to": None, "attachments": ()}
    reply = protocol.parse(json.dumps({"type": "message.send", "body": "", "client_id": "c2", "reply_to": "m1",
                                       "attachments": ["a1", "a2"]}))
    assert reply.fields == {"body": "", "client_id": "c2", "reply_to": "m1", "attachments": ["a1", "a2"]}
    assert protocol.parse('{"type":"reaction.add","id":"m1","emoji":"👍"}').fields == {"id": "m1", "emoji": "👍"}
    assert protocol.parse('{"type":"ping"}').fields == {}
    assert protocol.parse('{"type":"resume","after":0}').fields == {"after": 0}


def test_error_frame_carries_retry_after_only_when_given():
    assert protocol.error_frame(code="muted", detail="x") == {"type": "error", "code": "muted", "detail": "x"}
    limited = protocol.error_frame(code="rate_limited", detail="x", retry_after=1.5)
    assert limited["retry_after"] == 1.5


def test_unicode_survives_encoding():
    body = "שלום\u200f \u200b 🎉 \x00 <script>"
    frame = protocol.message_frame({"body": body})
    assert json.loads(protocol.encode(frame))["body"] == body
