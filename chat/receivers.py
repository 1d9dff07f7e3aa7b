"""Signal receivers. The durability signals' one persistence receiver: enqueue the record to Kafka,
or store it inline when the embedded default runs without Kafka, and confirm either with
`Persisted`; the sender is acked only on that confirmation. request_finished's: close the request's
database connection. The rest end access on every instance when it ends (logout, a new password, a
removed member, a room made private) and count logins for the throttle: each calls one service."""

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.signals import request_finished
from django.db import connections
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from chat.bus import records
from chat.bus.producer import get_producer
from chat.models import Membership, Room
from chat.services import accounts, rooms
from chat.signals import Persisted, message_changed, message_sent


@receiver(message_sent)
@receiver(message_changed)
async def persist_record(sender, record: dict, **kwargs) -> Persisted:
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        await get_producer().send(record)  # resolves once Kafka has it (acks=all), else raises
        return Persisted(record["id"], "kafka")
    from chat.services.persistence import messages_persist

    await database_sync_to_async(messages_persist)([records.decode(records.encode(record))])
    return Persisted(record["id"], "database")


@receiver(request_finished)
def close_request_connection(sender, **kwargs) -> None:
    """Under ASGI each HTTP request runs its sync code on a thread of its own that ends with it, so
    a connection kept for reuse (CONN_MAX_AGE, meant for the WebSocket path's one thread) would
    only linger there: close it with the request. Runs on the request's thread, so it closes that
    thread's connection only."""
    connections.close_all()


@receiver(user_logged_out)
def end_session_sockets(sender, request, user, **kwargs) -> None:
    if user is not None and request is not None:  # sent before the session is flushed: its key is there
        accounts.session_end(user_id=user.pk, session_key=request.session.session_key)


@receiver(pre_save, sender=get_user_model())
def note_password_change(sender, instance, update_fields, raw=False, **kwargs) -> None:
    instance._chat_password_changing = not raw and accounts.user_password_is_changing(user=instance,
                                                                                     update_fields=update_fields)


@receiver(post_save, sender=get_user_model())
def end_sessions_of_old_password(sender, instance, **kwargs) -> None:
    if getattr(instance, "_chat_password_changing", False):
        instance._chat_password_changing = False
        accounts.user_password_changed(user=instance)


@receiver(post_save, sender=get_user_model())
def give_new_user_a_chat_profile(sender, instance, created, raw=False, **kwargs) -> None:
    if created and not raw:
        accounts.chat_profile_create(user=instance)


@receiver(user_login_failed)
def count_failed_login(sender, credentials, request=None, **kwargs) -> None:
    accounts.login_failure_record(username=str(credentials.get("username", "")),
                                  address=accounts.client_address(request) if request is not None else None)


@receiver(user_logged_in)
def forget_failed_logins(sender, request, user, **kwargs) -> None:
    accounts.login_success_record(username=user.get_username())


@receiver(post_delete, sender=Membership)
def end_removed_members_access(sender, instance, **kwargs) -> None:
    rooms.room_access_check(room_id=instance.room_id, user_ids=[instance.user_id])


@receiver(pre_save, sender=Room)
def note_room_going_private(sender, instance, update_fields, raw=False, **kwargs) -> None:
    instance._chat_going_private = not raw and rooms.room_is_going_private(room=instance, update_fields=update_fields)


@receiver(post_save, sender=Room)
def end_outsiders_access(sender, instance, **kwargs) -> None:
    if getattr(instance, "_chat_going_private", False):
        instance._chat_going_private = False
        rooms.room_access_check(room_id=instance.pk)
