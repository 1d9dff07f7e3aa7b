"""Who opened a WebSocket: the user of its session cookie, by Django's rules (the session exists and
has not expired, its backend is configured, the user may authenticate, the session's auth hash is
the user's), read for every handshake that arrives together in one thread hop: a storm of
reconnects costs two queries per batch instead of two (and a connection check) per socket.

It takes the place of channels' AuthMiddlewareStack for WebSockets: the scope gets `user` and
`session_key`; nothing is written to the session, which a WebSocket cannot send back anyway."""

import logging
import re
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.http import parse_cookie
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from chat.batching import ThreadBatch
from chat.errors import SERVICE_UNAVAILABLE
from chat.join_gate import try_again_later
from chat.services.limits import join_retry_hint

logger = logging.getLogger(__name__)


class SocketAuthMiddleware:
    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        key = _session_cookie(scope)
        try:
            user = await _users_of_sessions(key) if key else None
        except SERVICE_UNAVAILABLE as exc:  # the database did not answer: the client comes back shortly
            logger.warning("socket told to try again later: its session could not be read (%s: %s)",
                           type(exc).__name__, exc)
            return await try_again_later(receive, send, join_retry_hint())
        return await self.inner(dict(scope, user=user or AnonymousUser(), session_key=key if user else None),
                                receive, send)


# What a session key can be (Django makes them of lowercase letters and digits, 32 long; its
# column holds 40): anything else is no session, and never reaches a query it could fail for the
# whole batch (a NUL, say).
_SESSION_KEY = re.compile(r"[a-z0-9]{8,40}")


def _session_cookie(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            key = parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME, "")
            return key if _SESSION_KEY.fullmatch(key) else None
    return None


def _sessions_read(keys: list[str]) -> dict[str, dict]:
    """The live sessions among `keys`, decoded: one query where the engine keeps them in a model
    (db, cached_db: the database is their record), else one load each."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if hasattr(store, "get_model_class"):
        rows = store.get_model_class().objects.filter(session_key__in=set(keys), expire_date__gt=timezone.now())
        decoder = store()
        return {key: decoder.decode(data) for key, data in rows.values_list("session_key", "session_data")}
    return {key: data for key in set(keys) if (data := store(session_key=key).load())}


def _users_read(keys: list[str]) -> list:
    """The user each session key proves, or None, as django.contrib.auth.get_user decides."""
    sessions = _sessions_read(keys)
    model = get_user_model()
    claims: dict[str, tuple] = {}  # session key -> (user id, backend, whether ModelBackend reads the user)
    for key, data in sessions.items():
        try:
            user_id, path = model._meta.pk.to_python(data[SESSION_KEY]), data[BACKEND_SESSION_KEY]
        except (KeyError, ValidationError):
            continue
        if path in settings.AUTHENTICATION_BACKENDS:
            backend = load_backend(path)
            claims[key] = (user_id, backend, type(backend).get_user is ModelBackend.get_user)
    # ModelBackend's get_user is one query a user: the same read, for all of them at once.
    bulk = {user_id for user_id, _, by_model in claims.values() if by_model}
    rows = model._default_manager.in_bulk(bulk) if bulk else {}
    users: list = []
    for key in keys:
        if key not in claims:
            users.append(None)
            continue
        user_id, backend, by_model = claims[key]
        if by_model:
            user = rows.get(user_id)
            user = user if user is not None and backend.user_can_authenticate(user) else None
        else:
            user = backend.get_user(user_id)
        users.append(user if user is not None and _hash_verified(user, sessions[key].get(HASH_SESSION_KEY)) else None)
    return users


def _hash_verified(user, session_hash: str | None) -> bool:
    """The session was signed with the user's current password under the current secret key. One
    signed under a fallback key is refused (4401): Django would give it a new key, which a WebSocket
    cannot hand the browser, and logout would not find the socket by it; the page's next request
    re-signs the session and the client connects again."""
    if not hasattr(user, "get_session_auth_hash"):
        return True
    return bool(session_hash) and constant_time_compare(session_hash, user.get_session_auth_hash())


_users_of_sessions = ThreadBatch(_users_read)
