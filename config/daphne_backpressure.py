"""Gives the chat consumer backpressure under daphne (contract §6: 4408 for clients that do not read).

ASGI's `websocket.send` has no backpressure in daphne: each frame goes straight into Twisted's
transport buffer, which grows without limit for a client that stops reading, and the app never
notices. This puts a callable in each WebSocket scope, `scope["extensions"]["chat.unsent_bytes"]`,
that reports the bytes that transport still holds; the consumer stops writing above a high-water
mark, so its own bounded outbox fills instead and it cuts the socket with 4408. For that close
code the client gets time to read its backlog before the connection is dropped. (Under uvicorn,
config/uvicorn_frames.py reports its transport's buffer the same way.)

It also puts `scope["extensions"]["chat.send_texts"]`, the fast frame path of config/ws_frames.py,
and writes frames through to the socket when Twisted holds nothing for it.

Inbound, daphne queues every frame a client sends for the app without limit: a client sending faster
than its frames are handled (each may wait on Redis) grew the process by hundreds of megabytes. Each
WebSocket's app gets an `InboundQueue` instead, which stops reading the socket while
INBOUND_HIGH_WATER frames wait and reads again once the app has taken them down to
INBOUND_LOW_WATER, so the client's own TCP window holds the rest, and drops frames that arrive after
the app closed the socket, which daphne queued for an app that no longer reads (uvicorn does both).
"""

import asyncio
from functools import partial

from chat.protocol import CLOSE_SLOW_CONSUMER
from config.shims import versions_match
from config.ws_frames import SEND_TEXTS, UNSENT_BYTES, text_frames

SLOW_CONSUMER_DROP_SECONDS = 10
INBOUND_HIGH_WATER = 16  # frames of up to 64 KiB waiting for the app: reading stops here
INBOUND_LOW_WATER = 4

# daphne's Server.create_application, connections and WebSocketProtocol.serverClose; autobahn's
# protocol state, send queue, compression and fragmentation fields and closeHandshakeTimeout;
# Twisted's TCP transport buffer (dataBuffer, offset, _tempDataLen, socket) and its TLS layer
# (TLSMemoryBIOProtocol: transport, _appSendBuffer).
WRITTEN_FOR = {"daphne": "4.2.3", "autobahn": "26.10.2", "twisted": "26.10.0"}


_TCP = None  # Twisted's tcp.Connection, imported by install() once the versions are checked


def unsent_bytes(transport) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken yet. Under TLS (daphne -e ssl:)
    the socket's transport is Twisted's TLS layer over the TCP one: the encrypted records wait in
    the TCP transport's buffer, plaintext OpenSSL could not take yet in the TLS layer's."""
    held = 0
    while not isinstance(transport, _TCP):
        held += sum(map(len, getattr(transport, "_appSendBuffer", ())))
        transport = transport.transport
    return held + len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class InboundQueue(asyncio.Queue):
    """daphne's queue of one socket's ASGI events, with flow control on the socket's reads."""

    def __init__(self, protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.paused = False

    def put_nowait(self, item) -> None:
        if self.protocol.state != self.protocol.STATE_OPEN and item["type"] == "websocket.receive":
            return  # the app closed the socket and reads no more; a client still sending must not pile up here
        super().put_nowait(item)
        if not self.paused and self.qsize() >= INBOUND_HIGH_WATER and self.protocol.state == self.protocol.STATE_OPEN:
            self.paused = True
            self.protocol.transport.pauseProducing()

    def get_nowait(self):
        item = super().get_nowait()  # Queue.get ends here too
        if self.paused and self.qsize() <= INBOUND_LOW_WATER:
            self.resume()
        return item

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.protocol.transport.resumeProducing()


def create_application(server, protocol, scope):
    """daphne's Server.create_application for a WebSocket: the chat's extensions in the scope and an
    InboundQueue as the app's input queue."""
    extensions = scope.setdefault("extensions", {})
    extensions[UNSENT_BYTES] = lambda: unsent_bytes(protocol.transport)
    extensions[SEND_TEXTS] = lambda texts: send_texts(server, protocol, texts)
    assert "application_instance" not in server.connections[protocol]
    input_queue = InboundQueue(protocol)
    scope.setdefault("asgi", {"version": "3.0"})
    application_instance = server.application(scope=scope, receive=input_queue.get,
                                              send=partial(server.handle_reply, protocol))
    if protocol not in server.connections:
        return None
    server.connections[protocol]["application_instance"] = asyncio.ensure_future(application_instance,
                                                                                 loop=asyncio.get_event_loop())
    return input_queue


def send_texts(server, protocol, texts: tuple[str, ...]) -> None:
    """daphne's Server.handle_reply for each of an accepted socket's text frames, without the
    coroutine and in one write; the frames' bytes are built once for all the sockets the hub hands
    the same texts to."""
    connection = server.connections.get(protocol)
    if connection is None or connection.get("disconnected") or protocol.state != protocol.STATE_OPEN:
        return
    if protocol._perMessageCompress is None and not protocol.autoFragmentSize and not protocol.send_queue:
        write_through(protocol.transport, text_frames(texts))
    else:  # compressed or fragmented: each socket needs frames of its own
        for text in texts:
            protocol.sendMessage(text.encode(), False)


def write_through(transport, data: bytes) -> None:
    """Twisted's transport.write only buffers: the reactor registers the socket for writing, writes
    on its next turn and unregisters it, two epoll changes and a turn for every frame of every
    socket. When nothing is buffered already, hand the bytes to the socket first (as asyncio's own
    transports do) and leave Twisted only what the kernel did not take. Only a plain TCP transport:
    under TLS the transport is Twisted's TLS layer, which passes attribute lookups (socket
    included) to the TCP transport beneath it, and bytes sent there would skip the encryption."""
    if (not isinstance(transport, _TCP) or transport.TLS or not transport.connected or transport.disconnecting
            or transport.dataBuffer or transport._tempDataLen):
        return transport.write(data)
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:  # the connection is going: Twisted notices and closes it on its own
        return transport.write(data)
    if sent < len(data):
        transport.write(data[sent:])


def install() -> bool:
    """Replaces daphne's Server.create_application and wraps WebSocketProtocol.serverClose, on the
    versions it was written for only; returns whether it is installed."""
    if not versions_match(__name__, WRITTEN_FOR, without="frames go through ASGI one by one, and for a "
                          "client that stops reading they pile up in Twisted's buffer instead of ending in 4408"):
        return False
    global _TCP
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet.tcp import Connection

    _TCP = Connection
    if getattr(Server, "_chat_backpressure", False):
        return True
    create_application_of_daphne = Server.create_application

    def create_application_for_chat(self, protocol, scope):
        if isinstance(protocol, WebSocketProtocol):
            return create_application(self, protocol, scope)
        return create_application_of_daphne(self, protocol, scope)

    server_close = WebSocketProtocol.serverClose

    def server_close_with_time_to_read(self, code=None):
        if code == CLOSE_SLOW_CONSUMER:
            self.closeHandshakeTimeout = SLOW_CONSUMER_DROP_SECONDS
        queue = getattr(self, "application_queue", None)
        if isinstance(queue, InboundQueue):
            queue.resume()  # the app reads no more: let the client's close reply through
        server_close(self, code)

    Server.create_application = create_application_for_chat
    WebSocketProtocol.serverClose = server_close_with_time_to_read
    Server._chat_backpressure = True
    return True
