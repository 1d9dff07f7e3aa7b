"""The per-process room hub's heartbeat (chat/hub.py): it keeps this process's presence entries and
its users' socket counts alive in Redis, so a crashed instance's users expire on their own, and
notices a Redis shard back after an outage (or restarted), for the hub to resync its rooms' sockets.
"""

import asyncio
import logging
from typing import TYPE_CHECKING

from django.conf import settings

from chat.roomstate import room_state

if TYPE_CHECKING:
    from chat.hub import RoomHub

logger = logging.getLogger(__name__)


async def heartbeat_loop(hub: "RoomHub") -> None:
    """Every third of CHAT_PRESENCE_TTL (at least a second), for as long as the hub runs."""
    interval = max(1.0, settings.CHAT_PRESENCE_TTL / 3)
    lost: set[int] = set()  # shards that failed or restarted since this process last reached them
    server_ids: dict[int, str] = {}
    while True:
        await asyncio.sleep(interval)
        try:
            state = room_state()
            # A new server id means the shard restarted (or another took its place), even if
            # no call failed meanwhile.
            current = await state.server_ids()
            for index, server_id in enumerate(current):
                if server_id is None or server_ids.get(index, server_id) != server_id:
                    lost.add(index)
                if server_id is not None:
                    server_ids[index] = server_id
            rooms_changed, failed = await presence_keep_alive(hub, state)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("presence heartbeat failed; retrying every %.0f s", interval)
            continue
        try:
            # The user's socket count (CHAT_MAX_SOCKETS_PER_USER) expires like presence.
            await state.limits.sockets_refresh([(c.user_id, c.conn_id) for c in hub.sockets()],
                                               settings.CHAT_PRESENCE_TTL)
        except Exception:  # noqa: BLE001 - a user's shard down: the other shards' rooms go on
            logger.warning("socket counts not refreshed (a Redis shard unreachable?); retrying every %.0f s",
                           interval)
        back = {index for index in lost if current[index] is not None and index not in failed}
        if back:
            lost -= back
            await hub.after_redis_outage(back)
        from chat.services.presence import presence_announce  # services build on the hub's layer

        for room_id in rooms_changed:
            await presence_announce(room_id)


async def presence_keep_alive(hub: "RoomHub", state) -> tuple[list[int], set[int]]:
    """Extend the presence of the hub's sockets in a room (RoomState.presence_refresh), each checked
    again as its call goes: a socket that left since the list was taken must not be put back online."""
    present = {c.conn_id: c for c in hub.present()}
    entries = [(c.room_id, c.conn_id, c.username) for c in present.values()]
    return await state.presence_refresh(entries, keep=lambda entry: present[entry[1]].present)
