"""The live side of actions: frames to a room, events to a user's sockets on every instance, live
effects that wait for a commit, and changes handed to the durability signal."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chat import metrics, protocol
from chat.errors import SERVICE_UNAVAILABLE, NotPersisted
from chat.roomfeed import room_frame_event
from chat.roomstate import HUB_GROUP, room_state
from chat.signals import NotConfirmed, message_changed, persist

logger = logging.getLogger(__name__)


async def room_broadcast(room_id: int, frame: dict, *, exclude: str | None = None, moved: bool = False) -> None:
    # Only message frames carry a seq for the sockets' duplicate check; edits and deletes of older
    # messages, and a message the worker `moved` to a new seq (chat.storage), must always get through.
    seq = frame["seq"] if frame["type"] == "message" and not moved else None
    event = room_frame_event(room_id, protocol.encode(frame), seq)
    if exclude:
        event["exclude"] = exclude
    await room_state().publish(room_id, event)  # on the room's shard, where its hubs subscribe


async def hub_event(event: dict) -> None:
    """A user-wide event for every instance's hub (which picks that user's sockets)."""
    await get_channel_layer().group_send(HUB_GROUP, event)


async def sidebar_changed(*, user_ids: list[int]) -> None:
    """These users' sidebars changed (a room joined, added to or removed from, a new DM): their
    sockets on every instance watch the new set and tell their clients to fetch it."""
    await hub_event({"type": "user.sidebar", "users": list(user_ids)})


async def sockets_close(*, user_id: int, code: int, room_id: int | None = None, session: str | None = None,
                        auth: str | None = None) -> None:
    """Close a user's sockets on every instance: all of them, or only those in one room, of one
    session (its tag) or let in with a session hash other than the current one (`auth`, its tag)."""
    event = {"type": "user.close", "user": user_id, "code": code}
    for name, value in (("room", room_id), ("session", session), ("auth", auth)):
        if value is not None:
            event[name] = value
    await hub_event(event)


_effects: set[asyncio.Task] = set()  # live effects scheduled on a running loop, kept until done


def after_commit(coroutine_function, **kwargs) -> None:
    """Run a live effect once the database change is committed (at once outside a transaction).

    async_to_sync from a view's or the admin's worker thread runs it on the server's own event
    loop, where the channel layer's connections live; an action called straight from a coroutine
    (its thread runs the loop) schedules it there instead. An effect Redis cannot carry now does not
    fail the action, whose change is stored: a socket that missed it reads the change when it next
    joins (after an outage the hub has the sockets on that Redis rejoin)."""

    def run() -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                async_to_sync(coroutine_function)(**kwargs)
            except SERVICE_UNAVAILABLE as exc:
                logger.warning("live effect %s not sent, its change is stored: %s: %s",
                               coroutine_function.__name__, type(exc).__name__, exc)
            return
        task = loop.create_task(coroutine_function(**kwargs))
        _effects.add(task)
        task.add_done_callback(_effects.discard)

    transaction.on_commit(run)


async def change_persist(record: dict) -> None:
    """Hand a change's record to the durability signal; NotPersisted unless a receiver confirms it."""
    try:
        await persist(message_changed, record)
    except Exception as exc:
        metrics.KAFKA_PRODUCE_ERRORS.inc()
        if not isinstance(exc, NotConfirmed):  # persist logged that one
            logger.warning("%s of %s in room %s not persisted: %s", record["event"], record["id"], record["room"], exc)
        raise NotPersisted(f"The change could not be stored ({type(exc).__name__}); try again.") from exc
