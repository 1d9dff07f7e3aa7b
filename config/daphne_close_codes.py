"""Lets the app close a WebSocket under daphne with the RFC 6455 server codes it needs, and with the
close reason the ASGI `websocket.close` event gives.

Autobahn's `sendClose` accepts only 1000 and 3000-4999 (the codes a *browser* may send), so
daphne turns the contract's 1003, 1009 and 1012 into an internal error (1011): daphne#374,
autobahn-python#1642. Servers may send these codes; this sends the close frame directly for them.
daphne also drops the event's `reason` (its `serverClose` takes a code only), and a socket shed
with 1013 needs it to tell the client `retry_after=<seconds>`: the reason goes out with every code,
cut to the 123 bytes a close frame holds as autobahn does. Remove once daphne does both.
"""

from config.shims import versions_match

SERVER_CLOSE_CODES = frozenset({1001, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014})
REASON_BYTES = 123  # RFC 6455 5.5.1: a control frame's payload is 125 bytes, 2 of them the code

# daphne's WebSocketProtocol.serverClose and handle_reply (which calls serverClose(code=...) for a
# websocket.close), autobahn's sendCloseFrame, its sendClose's code check and util.encode_truncate.
WRITTEN_FOR = {"daphne": "4.2.3", "autobahn": "26.10.2"}


def install() -> bool:
    """Replaces daphne's WebSocketProtocol.serverClose and wraps its handle_reply, on the versions it
    was written for only; returns whether it is installed."""
    if not versions_match(__name__, WRITTEN_FOR, without="closes with 1003, 1009 or 1012 go out as 1011, "
                          "and without their reason"):
        return False
    from autobahn.util import encode_truncate
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol, "_chat_close_codes", False):
        return True
    handle_reply_of_daphne = WebSocketProtocol.handle_reply

    def handle_reply(self, message):
        if message.get("type") != "websocket.close" or not message.get("reason"):
            return handle_reply_of_daphne(self, message)
        # daphne calls serverClose(code=...) from here, through any wrapper of it: the reason waits
        # on the protocol for that call.
        self._chat_close_reason = message["reason"]
        try:
            return handle_reply_of_daphne(self, message)
        finally:
            del self._chat_close_reason

    def server_close(self, code=None):
        code = 1000 if code is None else code
        reason = getattr(self, "_chat_close_reason", None)
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, REASON_BYTES) if reason else None,
                                isReply=False)
        else:
            self.sendClose(code=code, reason=reason)

    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol.serverClose = server_close
    WebSocketProtocol._chat_close_codes = True
    return True
