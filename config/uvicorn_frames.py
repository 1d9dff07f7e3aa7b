"""The chat's fast frame path under uvicorn (see config/ws_frames.py), for its websockets sans-I/O
protocol (uvicorn's default with the websockets package installed).

Measured back to back with the fan-out benchmark, it took p99 at 20k offered deliveries/s from
248 to 41 ms (docs/performance.md). Sockets that negotiated permessage-deflate (browsers ask for it
unless uvicorn runs with --ws-per-message-deflate false) are compressed per connection, so they
keep uvicorn's own framing. Under --ssl-keyfile the transport is asyncio's TLS transport: its write
encrypts, and its get_write_buffer_size counts what waits to be encrypted or sent (the TCP
transport beneath holds at most its high-water mark more); tests/integration/test_tls.py.
"""

from config.shims import versions_match
from config.ws_frames import SEND_TEXTS, UNSENT_BYTES, text_frames

# uvicorn's WebSocketsSansIOProtocol (run_asgi, scope, transport, handshake_complete, close_sent,
# conn) and websockets' ServerProtocol (state, extensions, send_text, data_to_send).
WRITTEN_FOR = {"uvicorn": "0.54.0", "websockets": "17.4"}

_OPEN = None  # websockets' State.OPEN, imported by install() once the version is checked


def send_texts(protocol, texts: tuple[str, ...]) -> None:
    """uvicorn's `websocket.send` of each text for an accepted socket, without the coroutine and in
    one write: the frames' bytes are shared by every socket unless the connection compresses (then
    it frames its own)."""
    if not protocol.handshake_complete or protocol.close_sent or protocol.transport.is_closing():
        return
    if protocol.conn.state is not _OPEN:
        return
    if protocol.conn.extensions:  # permessage-deflate: compressed per connection
        for text in texts:
            protocol.conn.send_text(text.encode())
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
    else:
        protocol.transport.write(text_frames(texts))


def install() -> bool:
    """Wraps uvicorn's WebSocketsSansIOProtocol.run_asgi to put the fast frame path in each scope, on
    the versions it was written for only; returns whether it is installed."""
    global _OPEN
    if not versions_match(__name__, WRITTEN_FOR, without="frames go through ASGI one by one"):
        return False
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State

    if getattr(WebSocketsSansIOProtocol, "_chat_frames", False):
        return True
    _OPEN = State.OPEN
    run_asgi = WebSocketsSansIOProtocol.run_asgi

    async def run_asgi_with_frame_path(self):
        extensions = self.scope.setdefault("extensions", {})
        extensions[SEND_TEXTS] = lambda texts: send_texts(self, texts)
        extensions[UNSENT_BYTES] = self.transport.get_write_buffer_size
        return await run_asgi(self)

    WebSocketsSansIOProtocol.run_asgi = run_asgi_with_frame_path
    WebSocketsSansIOProtocol._chat_frames = True
    return True
