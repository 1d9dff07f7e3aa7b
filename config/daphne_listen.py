"""How daphne listens, whatever its command line says (the contract's `daphne -b HOST -p PORT`
included):

- with a backlog of LISTEN_BACKLOG: Twisted's default of 50 makes the kernel drop the SYNs of a
  reconnect storm, which clients resend only after a second. An endpoint that names its own
  `backlog=` keeps it. Linux caps the backlog at net.core.somaxconn (docs/deployment.md).
- as the join gate's listener (chat/join_gate.py): it stops accepting while CHAT_MAX_PENDING_JOINS
  joins are under way, so a storm's sockets wait in that backlog instead of being accepted and
  shed, and an accept round takes no more connections than joins may begin."""

from config.shims import versions_match

LISTEN_BACKLOG = 4096

# daphne.server's module-level serverFromString, which Server.run calls for each endpoint string;
# Twisted's tcp.Port (stopReading, startReading, numberAccepts: the connections one doRead accepts).
WRITTEN_FOR = {"daphne": "4.2.3", "twisted": "26.10.0"}


def with_backlog(description: str) -> str:
    """A Twisted server endpoint string with LISTEN_BACKLOG added to TCP and TLS ones that name none."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "ssl") or "backlog=" in description:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


# After an accept round the port rests this long; the connections it took hold join slots from then
# (limits.connection_accepted) until the application sees them, turns of the event loop later.
ACCEPT_REST_SECONDS = 0.01
ACCEPT_ROUND_MOST = 100  # Twisted's own first round: more in one turn would hold the loop


class GatedPort:
    """A listening port as the join gate's listener: paused by the gate at the limit, and each
    accept round takes no more connections than joins may begin."""

    def __init__(self, port) -> None:
        self.port = port
        self.paused = self.resting = False
        accept_round = port.doRead
        build_protocol = port.factory.buildProtocol

        def do_read():
            from chat.services import limits

            free = limits.joins_free()
            try:
                # No slot free: wait while sockets on their way to the gate may settle it; else one,
                # to be shed (at least one a round, so a limit of 0 sheds rather than hangs).
                if free or not limits.joins_in_transit():
                    port.numberAccepts = max(1, min(free, ACCEPT_ROUND_MOST))
                    return accept_round()
            finally:
                self.resting = True
                self._apply()
                port.reactor.callLater(ACCEPT_REST_SECONDS, self._rested)

        def build_counted(addr):  # Twisted's accept round calls it for each socket it took
            from chat.services import limits

            limits.connection_accepted()
            return build_protocol(addr)

        port.doRead = do_read
        port.factory.buildProtocol = build_counted

    def pause(self) -> None:
        self.paused = True
        self._apply()

    def resume(self) -> None:
        self.paused = False
        self._apply()

    def _rested(self) -> None:
        self.resting = False
        self._apply()

    def _apply(self) -> None:
        if not self.port.connected or self.port.disconnecting:  # daphne stopped listening
            return
        if self.paused or self.resting:
            self.port.stopReading()
        else:
            self.port.startReading()


def install() -> bool:
    """Replaces daphne.server's serverFromString, on the versions it was written for only; returns
    whether it is installed."""
    if not versions_match(__name__, WRITTEN_FOR, without="daphne listens with Twisted's backlog of 50 "
                                                         "and accepts connections past the join limit"):
        return False
    from daphne import server

    if getattr(server.serverFromString, "_chat_backlog", False):
        return True
    original = server.serverFromString

    def server_from_string(reactor, description):
        endpoint = original(reactor, with_backlog(str(description)))
        listen = endpoint.listen

        def listen_gated(factory):
            return listen(factory).addCallback(_gated)

        endpoint.listen = listen_gated
        return endpoint

    server_from_string._chat_backlog = True
    server.serverFromString = server_from_string
    return True


def _gated(port):
    from chat import join_gate

    join_gate.listener_add(GatedPort(port))
    return port
