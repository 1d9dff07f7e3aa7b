"""The chat's fast frame path, shared by the daphne and uvicorn hooks (config/daphne_backpressure.py,
config/uvicorn_frames.py). Each puts two callables in a WebSocket scope's extensions:

- `chat.send_texts(texts)`: what the server's `websocket.send` does for each text in turn, as one
  plain call and one write. The room hub writes a frame to each of its sockets in one loop; through
  ASGI each write is a coroutine and a writer task to wake, which under load made the event loop's
  turns long enough to delay every send. Several texts (message frames the hub received together)
  go in one write: one system call, and one wake-up of the client, for all of them.
- `chat.unsent_bytes()`: bytes the socket's transport holds that the kernel has not taken; the
  consumer queues (and past a limit cuts with 4408) instead of writing above a high-water mark.

The frames are handed to the socket's transport, which encrypts them when the server terminates
TLS (daphne writes straight to the kernel only on a plain TCP transport). They follow RFC 6455
alone and touch no server's internals; each hook checks the upstream versions it was written for
(config/shims.py) and, on others, leaves both callables out, so the consumer writes through
ASGI's `websocket.send` instead.
"""

UNSENT_BYTES = "chat.unsent_bytes"
SEND_TEXTS = "chat.send_texts"


_last_frames: tuple[tuple[str, ...], bytes] | None = None


def text_frames(texts: tuple[str, ...]) -> bytes:
    """The WebSocket frames of `texts`, back to back, remembered for the tuple last asked for (the
    hub hands the same tuple to every socket of the room). Servers build each frame anew for every
    socket (autobahn also formats debug-log arguments when debug logging is off): most of their
    per-frame cost (docs/performance.md)."""
    global _last_frames
    if _last_frames is not None and _last_frames[0] is texts:
        return _last_frames[1]
    _last_frames = (texts, b"".join(map(text_frame, texts)))
    return _last_frames[1]


def text_frame(text: str) -> bytes:
    """A server-to-client WebSocket text frame: FIN, unmasked, so the same bytes for every socket."""
    payload = text.encode()
    size = len(payload)
    if size <= 125:
        header = bytes((0x81, size))
    elif size <= 0xFFFF:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload
