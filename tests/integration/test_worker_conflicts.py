"""The real worker, fed through Kafka, keeps every acked message when a seq was handed out twice
(as a promoted Redis replica that lacks the last writes would): the second message is stored under
a new seq, logged, counted and sent to the room's open sockets; a second id for one client_id is a
re-send, logged and counted, and the first stands."""

import httpx

from chat.bus import records
from chat.bus.topics import ensure_topics
from chat.models import Message
from chat.services.persistence import messages_persist
from tests.conftest import child_env, make_room
from tests.integration.test_metrics import scrape
from tests.integration.test_worker import created_record, produce, run_worker
from tests.support import WebServer, chat_socket, free_port, unique, unique_topic, wait_until


def message_record(room, author, seq: int, client_id: str | None = None) -> dict:
    return {**created_record(room, author, seq), "client_id": client_id or unique("c")}


def stored_seqs(room) -> dict[str, int]:
    return {str(ident): seq for ident, seq in Message.objects.filter(room=room).values_list("id", "seq")}


async def test_a_seq_handed_out_twice_keeps_both_messages_and_the_room_sees_the_moved_one_live(alice):
    room = make_room(alice)
    stored = [message_record(room, alice, seq) for seq in (1, 2, 3)]
    messages_persist([records.decode(records.encode(record)) for record in stored])
    # The web instance's records go to a topic no worker reads until the end, so the messages it
    # sequences stay unstored meanwhile: the moved message lands below what the socket has seen.
    live_topic, injected_topic = unique_topic("live"), unique_topic("injected")
    for topic in (live_topic, injected_topic):
        ensure_topics(topic=topic, partitions=1)
    web = WebServer(unique("web-conflicts"), child_env(KAFKA_TOPIC=live_topic)).start()
    port = free_port()
    worker = None
    try:
        async with chat_socket(web, room.slug, alice.cookie) as socket:
            for n in range(3):
                await socket.send({"type": "message.send", "body": f"live {n}", "client_id": unique("c")})
                await socket.recv_type("ack")
            live = [frame for frame in socket.frames if frame["type"] == "message"]
            assert [frame["seq"] for frame in live] == [4, 5, 6]  # Redis's counter went on from Postgres's 3

            twin = message_record(room, alice, 2)  # seq 2 again, another message
            resend = message_record(room, alice, 3, client_id=stored[2]["client_id"])  # stored[2] under a new id
            produce(injected_topic, [(records.record_key(r), records.encode(r)) for r in (twin, resend)])
            worker = run_worker(injected_topic, unique("group"), unique("wconflicts"), 30, "--metrics-port", str(port))

            moved = await socket.recv_type("message", timeout=30)
            # Above Postgres's highest (3), below the socket's newest (6): it got past the socket's
            # duplicate check, as an edit does.
            assert (moved["id"], moved["seq"], moved["body"]) == (twin["id"], 4, twin["body"])
            assert moved["author"] == {"id": alice.id, "username": alice.username}

        def counters() -> dict[str, float]:
            try:
                return scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                return {}

        wait_until(lambda: counters().get("chat_worker_records_total") == 2, 30, 0.2, "the worker's records counted")
        samples = counters()
        assert samples["chat_worker_seq_reassigned_total"] == 1
        assert samples["chat_worker_resends_total"] == 1
        worker.stop()
        log = worker.log()
        assert f"seq 2 of message {twin['id']} was already message {stored[1]['id']}" in log
        assert "stored as seq 4" in log
        original = stored[2]
        assert f"message {resend['id']} re-sends client_id '{original['client_id']}' of message {original['id']}" in log
        assert stored_seqs(room) == {**{r["id"]: r["seq"] for r in stored}, twin["id"]: 4}

        # The live messages stored at last: the first finds seq 4 taken by the moved one and moves
        # in turn, above the batch's 6. Every acked message is kept, each seq names one message.
        rest = run_worker(live_topic, unique("group"), unique("wlive"), 4)
        assert rest.proc.wait(90) == 0, rest.log()
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
    assert stored_seqs(room) == {**{r["id"]: r["seq"] for r in stored}, twin["id"]: 4,
                                 live[0]["id"]: 7, live[1]["id"]: 5, live[2]["id"]: 6}
    assert "seq 4 of message " + live[0]["id"] in rest.log()
