"""The chat's fast frame path, shared by the daphne and uvicorn hooks (config/daphne_backpressure.py,
config/uvicorn_frames.py). Each puts two callables in a WebSocket scope's extensions:

- `chat.send_text(text)`: what the server's `websocket.send` does, as a plain call. The room hub
  writes a frame to each of its sockets in one loop; through ASGI each write is a coroutine and a
  writer task to wake, which under load made the event loop's turns long enough to delay every send.
- `chat.unsent_bytes()`: bytes the socket's transport holds that the kernel has not taken; the
  consumer queues (and past a limit cuts with 4408) instead of writing above a high-water mark.
"""

UNSENT_BYTES = "chat.unsent_bytes"
SEND_TEXT = "chat.send_text"


_last_frame: tuple[str, bytes] | None = None


def text_frame(text: str) -> bytes:
    """A server-to-client WebSocket text frame (FIN, unmasked: the same bytes for every socket),
    remembered for the text it was last asked for (the hub asks once per socket of the room).
    Servers build the frame anew for every socket (autobahn also formats debug-log arguments
    when debug logging is off): most of their per-frame cost (docs/performance.md)."""
    global _last_frame
    if _last_frame is not None and _last_frame[0] is text:
        return _last_frame[1]
    payload = text.encode()
    size = len(payload)
    if size <= 125:
        header = bytes((0x81, size))
    elif size <= 0xFFFF:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    _last_frame = (text, header + payload)
    return _last_frame[1]
