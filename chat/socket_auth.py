"""Who opened a WebSocket: the user of its session cookie, by Django's rules (the session exists and
has not expired, its backend is configured, the user may authenticate, the session's auth hash is
the user's), read for every handshake that arrives together in one thread hop: a storm of
reconnects costs two queries per batch instead of two (and a connection check) per socket.

It takes the place of channels' AuthMiddlewareStack for WebSockets: the scope gets `user` and
`session_key`; nothing is written to the session, which a WebSocket cannot send back anyway."""

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


class SocketAuthMiddleware:
    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        key = _session_cookie(scope)
        user = await _users_of_sessions(key) if key else None
        return await self.inner(dict(scope, user=user or AnonymousUser(), session_key=key if user else None),
                                receive, send)


def _session_cookie(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME) or None
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
    claims: dict[str, tuple] = {}  # session key -> (user id, backend)
    for key, data in sessions.items():
        try:
            user_id, path = model._meta.pk.to_python(data[SESSION_KEY]), data[BACKEND_SESSION_KEY]
        except (KeyError, ValidationError):
            continue
        if path in settings.AUTHENTICATION_BACKENDS:
            claims[key] = (user_id, load_backend(path))
    # ModelBackend's get_user is one query a user: the same read, for all of them at once.
    bulk = {user_id for user_id, backend in claims.values() if type(backend).get_user is ModelBackend.get_user}
    rows = model._default_manager.in_bulk(bulk) if bulk else {}
    users: list = []
    for key in keys:
        if key not in claims:
            users.append(None)
            continue
        user_id, backend = claims[key]
        if user_id in bulk:
            user = rows.get(user_id)
            user = user if user is not None and backend.user_can_authenticate(user) else None
        else:
            user = backend.get_user(user_id)
        users.append(user if user is not None and _hash_verified(user, sessions[key].get(HASH_SESSION_KEY)) else None)
    return users


def _hash_verified(user, session_hash: str | None) -> bool:
    """The session was signed with the user's current password (or under a fallback secret key,
    which Django re-signs at the session's next HTTP request)."""
    if not hasattr(user, "get_session_auth_hash"):
        return True
    if not session_hash:
        return False
    return constant_time_compare(session_hash, user.get_session_auth_hash()) or any(
        constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash())


_users_of_sessions = ThreadBatch(_users_read)
