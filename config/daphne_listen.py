"""daphne listens with a backlog of LISTEN_BACKLOG whatever its command line says (the contract's
`daphne -b HOST -p PORT` included): Twisted's default of 50 makes the kernel drop the SYNs of a
reconnect storm, which clients resend only after a second. An endpoint that names its own
`backlog=` keeps it. Linux caps the backlog at net.core.somaxconn (docs/deployment.md)."""

from config.shims import versions_match

LISTEN_BACKLOG = 1024

# daphne.server's module-level serverFromString, which Server.run calls for each endpoint string.
WRITTEN_FOR = {"daphne": "4.2.3"}


def with_backlog(description: str) -> str:
    """A Twisted server endpoint string with LISTEN_BACKLOG added to TCP and TLS ones that name none."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "ssl") or "backlog=" in description:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


def install() -> bool:
    """Replaces daphne.server's serverFromString, on the version it was written for only; returns
    whether it is installed."""
    if not versions_match(__name__, WRITTEN_FOR, without="daphne listens with Twisted's backlog of 50"):
        return False
    from daphne import server

    if getattr(server.serverFromString, "_chat_backlog", False):
        return True
    original = server.serverFromString

    def server_from_string(reactor, description):
        return original(reactor, with_backlog(str(description)))

    server_from_string._chat_backlog = True
    server.serverFromString = server_from_string
    return True
