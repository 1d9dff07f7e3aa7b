"""Gives the chat consumer backpressure under daphne (contract §6: 4408 for clients that do not read).

ASGI's `websocket.send` has no backpressure in daphne: each frame goes straight into Twisted's
transport buffer, which grows without limit for a client that stops reading, and the app never
notices. This puts a callable in each WebSocket scope, `scope["extensions"]["chat.unsent_bytes"]`,
that reports the bytes that transport still holds; the consumer stops writing above a high-water
mark, so its own bounded outbox fills instead and it cuts the socket with 4408. For that close
code the client gets time to read its backlog before the connection is dropped. (Under uvicorn a
send already waits while the socket's buffer is full.)
"""

UNSENT_BYTES = "chat.unsent_bytes"
CLOSE_SLOW_CONSUMER = 4408
SLOW_CONSUMER_DROP_SECONDS = 10


def unsent_bytes(transport) -> int:
    """Bytes a Twisted TCP transport holds that the kernel has not taken yet."""
    return (len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
            + getattr(transport, "_tempDataLen", 0))


def install() -> None:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(Server, "_chat_backpressure", False):
        return
    create_application = Server.create_application

    def create_application_with_unsent_bytes(self, protocol, scope):
        if isinstance(protocol, WebSocketProtocol):
            scope.setdefault("extensions", {})[UNSENT_BYTES] = lambda: unsent_bytes(protocol.transport)
        return create_application(self, protocol, scope)

    server_close = WebSocketProtocol.serverClose

    def server_close_with_time_to_read(self, code=None):
        if code == CLOSE_SLOW_CONSUMER:
            self.closeHandshakeTimeout = SLOW_CONSUMER_DROP_SECONDS
        server_close(self, code)

    Server.create_application = create_application_with_unsent_bytes
    WebSocketProtocol.serverClose = server_close_with_time_to_read
    Server._chat_backpressure = True
