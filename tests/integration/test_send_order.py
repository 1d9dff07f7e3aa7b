"""A socket's sends that go to Redis together (RoomState.send_many) keep their order in the room's
seqs even when another sender starts the room's epoch while they are on their way."""

import asyncio
import secrets
import uuid

from chat.roomstate import room_state
from tests.support import state_message

NO_LIMIT = (10**6, 10**6)


def send(room_id: int, user_id: int, n: int) -> dict:
    return dict(room_id=room_id, user_id=user_id, client_id=uuid.uuid4().hex,
                message=state_message(room_id, user_id, str(n)))


async def seed_it(room_id: int):
    """Another sender's first message to the room, which seeds its counter: one turn later, so it
    lands while the batch is on its way."""
    await asyncio.sleep(0)
    return await room_state().send(**send(room_id, 8, -1), seed=0)


async def test_a_batch_sees_the_room_at_one_moment_while_another_sender_seeds_it():
    """The batch's steps all need the seed or none does: a batch half of which ran before another
    sender seeded the room would sequence its second half first, and the sender's messages would
    reach the room out of the order they were sent in."""
    state = room_state()
    for _ in range(20):
        room_id = 10**12 + secrets.randbelow(10**9)  # a room of Redis state only, its counter not seeded yet
        batch = [send(room_id, 7, n) for n in range(400)]
        outcomes, seeded = await asyncio.gather(state.send_many(batch, rate=NO_LIMIT), seed_it(room_id))
        assert seeded.status == "ok"
        statuses = {outcome.status for outcome in outcomes}
        assert statuses in ({"seed"}, {"ok"}), [outcome.status for outcome in outcomes]
        if statuses == {"ok"}:
            seqs = [outcome.seq for outcome in outcomes]
            assert seqs == sorted(seqs)


async def test_a_batch_the_shard_refuses_for_its_identity_goes_again_whole_once_it_is_renewed():
    """Another deployment's identity on the shard (a restore, a failover): the batch's first step is
    refused, the identity written back, and the whole batch goes again as one transaction. The room
    starts a new epoch there, so every send of it asks for the seed (none fails, none is sequenced)."""
    state = room_state()
    room_id = 10**12 + secrets.randbelow(10**9)
    assert (await state.send(**send(room_id, 8, -1), seed=0)).status == "ok"
    shard, _ = state._room(room_id)
    await shard.redis.hset(state.identity_key, "deployment", "another-database")

    outcomes = await state.send_many([send(room_id, 7, n) for n in range(50)], rate=NO_LIMIT)

    assert [getattr(outcome, "status", outcome) for outcome in outcomes] == ["seed"] * 50
    assert (await shard.redis.hget(state.identity_key, "deployment")).decode() == await state.deployment()
