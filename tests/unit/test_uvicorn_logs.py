"""The filter config/uvicorn_logs.py puts on uvicorn.error while the access log is off."""

import logging

from config.uvicorn_logs import WebSocketAccessLines


def record(msg: str, *args, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, args, None)


def test_only_the_per_socket_lines_are_dropped():
    keep = WebSocketAccessLines().filter
    assert not keep(record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/ws/chat/r/"))
    assert not keep(record('%s - "WebSocket %s" 403', "127.0.0.1:5000", "/ws/chat/r/"))
    assert not keep(record('%s - "WebSocket %s" %d', "127.0.0.1:5000", "/ws/chat/r/", 404))
    assert not keep(record("connection open"))
    assert not keep(record("connection rejected (%d %s)", 403, "Forbidden"))
    assert keep(record("Started server process [%d]", 1))
    assert keep(record("Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "127.0.0.1", 8000))
    assert keep(record("connection open", level=logging.WARNING))  # only INFO lines go
