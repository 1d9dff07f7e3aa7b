"""The mention pattern (chat.protocol.MENTION_RE, docs/protocol.md) and the sidebar frames."""

import pytest

from chat import protocol


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("no at sign", set()),
        ("hi @bob", {"bob"}),
        ("thanks @bob.", {"bob"}),  # a sentence's full stop is not part of the name
        ("@bob, @carol-x! and @d.e@f.g", {"bob", "carol-x", "d.e@f.g"}),
        ("write to mail@example.com", set()),  # an e-mail address names nobody
        ("@bob's idea", {"bob"}),
        ("(@ana)", {"ana"}),
        ("@Zoë_1+2", {"Zoë_1+2"}),  # Django's usernames are Unicode word characters and @.+-_
        ("@ alone", set()),
        ("@bob @bob", {"bob"}),
    ],
)
def test_mentioned_usernames(body: str, names: set[str]) -> None:
    assert protocol.mentioned_usernames(body) == names


def test_sidebar_frames() -> None:
    assert protocol.sidebar_activity_frame(room="design", seq=4, mention=True) == {
        "type": "sidebar.activity", "room": "design", "seq": 4, "mention": True}
    assert protocol.sidebar_changed_frame() == {"type": "sidebar.changed"}
    assert protocol.sidebar_hello_frame(user={"id": 1, "username": "a"})["type"] == "sidebar.hello"
