"""The chat's fast frame path under uvicorn (see config/ws_frames.py), for its websockets sans-I/O
protocol (uvicorn's default with the websockets package installed).

Measured with the fan-out benchmark (session 5, back to back, 200 receivers): p99 at 20k offered
deliveries/s 248 -> 41 ms, at 40k 2.7 -> 0.76 s (docs/performance.md). Sockets that negotiated
permessage-deflate (browsers ask for it unless uvicorn runs with --ws-per-message-deflate false)
are compressed per connection, so they keep uvicorn's own framing.
"""

from websockets.protocol import State

from config.ws_frames import SEND_TEXTS, UNSENT_BYTES, text_frames


def send_texts(protocol, texts: tuple[str, ...]) -> None:
    """uvicorn's `websocket.send` of each text for an accepted socket, without the coroutine and in
    one write: the frames' bytes are shared by every socket unless the connection compresses (then
    it frames its own)."""
    if not protocol.handshake_complete or protocol.close_sent or protocol.transport.is_closing():
        return
    if protocol.conn.state is not State.OPEN:
        return
    if protocol.conn.extensions:  # permessage-deflate: compressed per connection
        for text in texts:
            protocol.conn.send_text(text.encode())
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
    else:
        protocol.transport.write(text_frames(texts))


def install() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    if getattr(WebSocketsSansIOProtocol, "_chat_frames", False):
        return
    run_asgi = WebSocketsSansIOProtocol.run_asgi

    async def run_asgi_with_frame_path(self):
        extensions = self.scope.setdefault("extensions", {})
        extensions[SEND_TEXTS] = lambda texts: send_texts(self, texts)
        extensions[UNSENT_BYTES] = self.transport.get_write_buffer_size
        return await run_asgi(self)

    WebSocketsSansIOProtocol.run_asgi = run_asgi_with_frame_path
    WebSocketsSansIOProtocol._chat_frames = True
