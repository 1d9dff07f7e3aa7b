"""Lets the app close a WebSocket under daphne with the RFC 6455 server codes it needs.

Autobahn's `sendClose` accepts only 1000 and 3000-4999 (the codes a *browser* may send), so
daphne turns the contract's 1003, 1009 and 1012 into an internal error (1011): daphne#374,
autobahn-python#1642. Servers may send these codes; this sends the close frame directly for them.
Remove once daphne passes them through.
"""

from config.shims import versions_match

SERVER_CLOSE_CODES = frozenset({1001, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014})

# daphne's WebSocketProtocol.serverClose, autobahn's sendCloseFrame and its sendClose's code check.
WRITTEN_FOR = {"daphne": "4.2.3", "autobahn": "26.10.2"}


def install() -> bool:
    """Replaces daphne's WebSocketProtocol.serverClose, on the versions it was written for only;
    returns whether it is installed."""
    if not versions_match(__name__, WRITTEN_FOR, without="closes with 1003, 1009 or 1012 go out as 1011"):
        return False
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol, "_chat_close_codes", False):
        return True
    original = WebSocketProtocol.serverClose

    def server_close(self, code=None):
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    WebSocketProtocol.serverClose = server_close
    WebSocketProtocol._chat_close_codes = True
    return True
