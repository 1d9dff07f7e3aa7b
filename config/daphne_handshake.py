"""Spares daphne's event loop the work autobahn does for debug lines that are not logged.

Autobahn builds the values of its debug lines before the logger drops them: on every connection
`_connectionMade` formats all of the protocol's options (about thirty) with `pformat`, and nearly
every step (connect, handshake, each frame sent, close) highlights names and values with `hltype`
and `hlval`. With debug off, as under daphne (txaio logs from info up unless told otherwise), a
storm of handshakes spent 11-13 % of daphne's event loop in that `pformat` and 3-5 % in the highlighting
(py-spy, docs/performance.md). Here the options are copied without the log line while autobahn's
debug level is off, and the highlighting is done only if a line is formatted. RFC 6455's UTF-8
validation is untouched.
"""

from config.shims import versions_match

# autobahn's WebSocketProtocol._connectionMade (its CONFIG_ATTRS copy and the pformat line), the
# module-level hltype and hlval of autobahn.websocket.protocol and autobahn.twisted.websocket (used
# there only as values of log lines); txaio's Logger._log_level.
WRITTEN_FOR = {"daphne": "4.2.3", "autobahn": "26.10.2", "txaio": "26.6.1"}


class _Highlighted:
    """A log line's value, highlighted by autobahn's `highlight` only when the line is formatted."""

    __slots__ = ("args", "highlight", "kwargs")

    def __init__(self, highlight, args, kwargs) -> None:
        self.highlight, self.args, self.kwargs = highlight, args, kwargs

    def __str__(self) -> str:
        return self.highlight(*self.args, **self.kwargs)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _on_demand(highlight):
    def highlight_on_demand(*args, **kwargs):
        return _Highlighted(highlight, args, kwargs)

    return highlight_on_demand


def install() -> bool:
    """Wraps daphne's WebSocketProtocol._connectionMade (inherited from autobahn) and puts
    on-demand hltype and hlval in autobahn's WebSocket modules, on the versions it was written for
    only; returns whether it is installed."""
    if not versions_match(__name__, WRITTEN_FOR, without="autobahn formats its debug lines on every "
                          "connection although they are not logged"):
        return False
    import autobahn.twisted.websocket
    import autobahn.util
    import autobahn.websocket.protocol
    from daphne.ws_protocol import WebSocketProtocol
    from txaio.interfaces import log_levels

    if getattr(WebSocketProtocol, "_chat_handshake", False):
        return True
    debug = log_levels.index("debug")
    connection_made_of_autobahn = WebSocketProtocol._connectionMade

    def connection_made(self):
        if log_levels.index(self.log._log_level) >= debug:
            return connection_made_of_autobahn(self)
        factory = self.factory
        for name in self.CONFIG_ATTRS:  # autobahn's copy of the factory's options, as it does it
            if not hasattr(self, name):
                setattr(self, name, getattr(factory, name))
        self.CONFIG_ATTRS = ()  # autobahn's own copy then finds nothing to copy, or to format
        try:
            return connection_made_of_autobahn(self)
        finally:
            del self.CONFIG_ATTRS

    for module in (autobahn.websocket.protocol, autobahn.twisted.websocket):
        module.hltype = _on_demand(autobahn.util.hltype)
        module.hlval = _on_demand(autobahn.util.hlval)
    WebSocketProtocol._connectionMade = connection_made
    WebSocketProtocol._chat_handshake = True
    return True
