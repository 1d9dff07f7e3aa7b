"""Cleaning user text before it becomes chat state."""

from django.conf import settings

from chat.errors import ChatError


def without_nul(text: str) -> str:
    """Postgres text cannot hold NUL; it is the one character dropped from user input."""
    return text.replace("\x00", "")


def message_body_clean(body: str, *, may_be_empty: bool = False) -> str:
    """The body as stored, or ChatError `empty_body` / `too_long`. `may_be_empty`: a message with
    attachments needs no text."""
    body = without_nul(body)
    if not body.strip() and not may_be_empty:
        raise ChatError("The message is empty.", code="empty_body")
    if len(body) > settings.CHAT_MAX_MESSAGE_LENGTH:
        raise ChatError(
            f"The message has {len(body)} characters; the limit is {settings.CHAT_MAX_MESSAGE_LENGTH}.",
            code="too_long",
        )
    return body
