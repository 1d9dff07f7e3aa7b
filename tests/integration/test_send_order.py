"""A socket's sends that go to Redis together (RoomState.send_many) keep their order in the room's
seqs even when another sender starts the room's epoch while they are on their way."""

import asyncio
import secrets
import uuid

from django.utils import timezone

from chat import protocol
from chat.roomstate import room_state

NO_LIMIT = (10**6, 10**6)


def send(room_id: int, user_id: int, n: int) -> dict:
    message = protocol.message_object(id=str(uuid.uuid4()), room=f"room-{room_id}", seq=0, author_id=user_id,
                                      author_username="order", body=str(n), created_at=timezone.now(),
                                      edited_at=None, client_id=None)
    return dict(room_id=room_id, user_id=user_id, client_id=uuid.uuid4().hex, message=message)


async def test_a_batch_sees_the_room_at_one_moment_while_another_sender_seeds_it():
    """The batch's steps all need the seed or none does: a batch half of which ran before another
    sender seeded the room would sequence its second half first, and the sender's messages would
    reach the room out of the order they were sent in."""
    state = room_state()
    for _ in range(20):
        room_id = 10**12 + secrets.randbelow(10**9)  # a room of Redis state only, its counter not seeded yet
        batch = [send(room_id, 7, n) for n in range(400)]

        async def seed_it(room_id: int):
            await asyncio.sleep(0)
            return await state.send(**send(room_id, 8, -1), seed=0)

        outcomes, seeded = await asyncio.gather(state.send_many(batch, rate=NO_LIMIT), seed_it(room_id))
        assert seeded.status == "ok"
        statuses = {outcome.status for outcome in outcomes}
        assert statuses in ({"seed"}, {"ok"}), [outcome.status for outcome in outcomes]
        if statuses == {"ok"}:
            seqs = [outcome.seq for outcome in outcomes]
            assert seqs == sorted(seqs)
