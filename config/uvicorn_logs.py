"""uvicorn's `--no-access-log` turns off its HTTP access log but not its WebSocket one: every socket
still writes '<client> - "WebSocket <path>" [accepted]' and websockets' "connection open" to the
uvicorn.error logger, two lines a join (about 4 % of a reconnect storm's event loop, py-spy). While
the access log is off, these lines are dropped too; with it on, they stay.

Only the logging API is used: if uvicorn or websockets change their wording, the lines come back,
nothing breaks."""

import logging

# The templates of uvicorn's lines for a handshake answered (accepted, refused, an HTTP response)
# and of websockets' own: a record's `msg` is the template, its arguments apart.
_SOCKET_LINES = frozenset({
    '%s - "WebSocket %s" [accepted]', '%s - "WebSocket %s" 403', '%s - "WebSocket %s" %d',
    "connection open", "connection rejected (%d %s)", "HTTP response sent (%d %s)",
})


class WebSocketAccessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        return record.msg not in _SOCKET_LINES


def access_log_off() -> bool:
    """What uvicorn's `--no-access-log` does to its access logger (uvicorn.config.Config)."""
    access = logging.getLogger("uvicorn.access")
    return not access.handlers and not access.propagate


def install() -> bool:
    """Drops the WebSocket access lines from uvicorn.error while uvicorn's access log is off;
    returns whether it did."""
    if not access_log_off():
        return False
    error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, WebSocketAccessLines) for f in error.filters):
        error.addFilter(WebSocketAccessLines())
    return True
