"""ASGI entry point: HTTP through Django, WebSockets through the chat consumer behind origin
validation (ALLOWED_HOSTS), the join limit and session authentication."""

import gc
import os
import sys

from django.core.asgi import get_asgi_application

# The server that imported this app, told apart before Django's setup imports daphne (an installed
# app) into every process, uvicorn's too.
SERVER = "uvicorn" if "uvicorn" in sys.modules else "daphne" if "daphne" in sys.modules else None

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()  # before importing consumers: it sets Django up

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chat import drain, metrics  # noqa: E402
from chat.checks import require_durability  # noqa: E402
from chat.join_gate import JoinGateMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.services import limits  # noqa: E402
from chat.socket_auth import SocketAuthMiddleware  # noqa: E402
from chat.upload_limit import UploadLimit  # noqa: E402

# Servers run no system checks: refuse to serve a chat that would ack messages nobody stores.
require_durability()

if SERVER == "daphne":
    from config import daphne_backpressure, daphne_close_codes, daphne_handshake, daphne_listen

    daphne_close_codes.install()
    daphne_backpressure.install()
    daphne_handshake.install()
    daphne_listen.install()
if SERVER == "uvicorn":
    from config import uvicorn_frames, uvicorn_logs

    uvicorn_frames.install()
    uvicorn_logs.install()

router = ProtocolTypeRouter(
    {
        # Too-large uploads are refused before Django reads (and spools) their bodies.
        "http": UploadLimit(django_asgi_app),
        # Joins past the limit are shed before their session is read; sessions are read in batches.
        "websocket": AllowedHostsOriginValidator(
            JoinGateMiddleware(SocketAuthMiddleware(URLRouter(websocket_urlpatterns)))),
    }
)


# What is loaded by now (Django, the apps, the server's libraries) lives as long as the process:
# keep it out of the garbage collector's full collections, each of which otherwise walks it all
# while every socket of the instance waits (measured: 55-143 ms a pause without, 50-55 with).
gc.freeze()
# Full collections still walk every socket's objects (about 0.12 ms a socket held). Young
# collections every 20 000 allocations instead of 700 let a connect's short-lived objects die
# before they are promoted, so full collections come far less often: opening 3 000 sockets, one
# full collection instead of eleven (0.6 s of pauses instead of 2.8 s), memory unchanged.
gc.set_threshold(20_000, 10, 10)
metrics.watch_gc_pauses()  # chat_gc_pause_seconds at /metrics


async def application(scope, receive, send):
    drain.install()  # once, on the first request: the server's own signal handlers exist by then
    limits.connection_arrived()  # off the accept rounds' count (config/daphne_listen.py); a join is the gate's now
    return await router(scope, receive, send)
