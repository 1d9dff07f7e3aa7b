"""Moderation by staff (from the admin): bans, mutes, hiding messages, reading a reported message in
its context, resolving reports. Each action is recorded in the moderation log and takes effect live
on every instance once committed."""

from datetime import UTC, datetime

from django.db import transaction

from chat import permissions, protocol, selectors
from chat.errors import Forbidden
from chat.models import ChatProfile, Message, ModerationAction, Report
from chat.services.events import after_commit, hub_event, sockets_close
from chat.services.messages import message_remove, message_restore

MUTED_INDEFINITELY = datetime(9999, 1, 1, tzinfo=UTC)


def _moderation_record(*, actor, action: str, reason: str, user=None, message: Message | None = None) -> None:
    ModerationAction.objects.create(actor=actor, action=action, target_user=user, target_message=message,
                                    reason=reason)


def profile_for(user) -> ChatProfile:
    return ChatProfile.objects.get_or_create(user=user)[0]


def user_ban(*, actor, user, reason: str = "") -> None:
    """Ban: every open socket of the user closes with 4403 on every instance; joins and the API refuse."""
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"banned": True})
        _moderation_record(actor=actor, action="ban", reason=reason, user=user)
        after_commit(sockets_close, user_id=user.id, code=protocol.CLOSE_FORBIDDEN)


def user_unban(*, actor, user, reason: str = "") -> None:
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"banned": False})
        _moderation_record(actor=actor, action="unban", reason=reason, user=user)


def user_mute(*, actor, user, until: datetime | None = None, reason: str = "") -> None:
    """Mute until `until` (or indefinitely): sends get `error: muted`, on open sockets too."""
    until = until or MUTED_INDEFINITELY
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"muted_until": until})
        _moderation_record(actor=actor, action="mute", reason=reason or f"until {until:%Y-%m-%d %H:%M %Z}",
                           user=user)
        after_commit(user_standing_update, user_id=user.id, muted_until=until)


def user_unmute(*, actor, user, reason: str = "") -> None:
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"muted_until": None})
        _moderation_record(actor=actor, action="unmute", reason=reason, user=user)
        after_commit(user_standing_update, user_id=user.id, muted_until=None)


def message_hide(*, actor, message: Message, reason: str = "") -> None:
    """Hide: gone from every connected client (`message.deleted`), from history and from resume."""
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(hidden=True)
        _moderation_record(actor=actor, action="hide", reason=reason, user=message.author, message=message)
        after_commit(message_remove, room_id=message.room_id, message_id=str(message.pk), by="moderator")


def message_unhide(*, actor, message: Message, reason: str = "") -> None:
    """Unhide: back in history and resume. Not re-broadcast live: clients get a room's messages in
    increasing seq, and this one is old; they see it on their next history load."""
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(hidden=False)
        _moderation_record(actor=actor, action="unhide", reason=reason, user=message.author, message=message)
        after_commit(message_restore, room_id=message.room_id,
                     message=selectors.message_to_object(message, message.room.slug))


def report_view(*, actor, report: Report) -> list[Message]:
    """The reported message with the few around it, for staff who may act on reports; who looked at
    the conversation, and when, goes in the moderation log."""
    if not permissions.can_read_reported(actor):
        raise Forbidden("Only staff who may act on reports read a reported conversation.")
    message = report.message
    _moderation_record(actor=actor, action="view", reason=f"report #{report.pk}", user=message.author,
                       message=message)
    return selectors.message_context(message)


def reported_messages_viewed(*, actor, messages, where: str) -> None:
    """Bodies of messages `actor` could not read but for a report, shown to them (the admin's message
    list or a message's page): each goes in the moderation log as a `view message`."""
    readable = set(permissions.readable_rooms(actor).filter(pk__in={m.room_id for m in messages})
                   .values_list("pk", flat=True))
    for message in messages:
        if message.room_id not in readable:
            _moderation_record(actor=actor, action="view message", reason=where, user=message.author, message=message)


def report_resolve(*, actor, report: Report, hide: bool, reason: str = "") -> None:
    """Resolve a report: with `hide`, the message is hidden too; without, it is dismissed."""
    why = f"report #{report.pk}" + (f": {reason}" if reason else "")
    with transaction.atomic():
        if hide:
            message_hide(actor=actor, message=report.message,
                         reason=f"report #{report.pk}: {reason or report.reason}")
        Report.objects.filter(pk=report.pk).update(resolved=True)
        _moderation_record(actor=actor, action="resolve report", reason=why, user=report.reporter,
                           message=report.message)


def report_author_ban(*, actor, report: Report, reason: str = "") -> None:
    """Ban the reported message's author and resolve the report."""
    with transaction.atomic():
        user_ban(actor=actor, user=report.message.author, reason=f"report #{report.pk}: {reason or report.reason}")
        report_resolve(actor=actor, report=report, hide=False, reason="author banned")


def report_author_mute(*, actor, report: Report, until: datetime | None = None, reason: str = "") -> None:
    """Mute the reported message's author until `until` (or until lifted) and resolve the report."""
    with transaction.atomic():
        user_mute(actor=actor, user=report.message.author, until=until,
                  reason=f"report #{report.pk}: {reason or report.reason}")
        report_resolve(actor=actor, report=report, hide=False, reason="author muted")


async def user_standing_update(*, user_id: int, muted_until: datetime | None) -> None:
    await hub_event({"type": "user.standing", "user": user_id, "muted_until": protocol.isoformat(muted_until)})
