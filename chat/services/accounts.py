"""Accounts: logins and signups throttled per account and per client address, and sessions that
end (logout, a new password) ending their sockets on every instance."""

import hashlib
import ipaddress
import logging
import math

from django.conf import settings
from django.http import HttpRequest

from chat import protocol
from chat.attempts import attempt_key, attempts
from chat.services.events import after_commit, sockets_close

logger = logging.getLogger(__name__)


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind CHAT_TRUSTED_PROXIES proxies the entry of
    X-Forwarded-For that the outermost of them added (entries left of it are the client's to write)."""
    address = request.META.get("REMOTE_ADDR", "")
    if settings.CHAT_TRUSTED_PROXIES > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            address = forwarded[-min(settings.CHAT_TRUSTED_PROXIES, len(forwarded))]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))  # one host may hold a whole /64
    return str(ip)


def throttle_message(wait: float) -> str:
    minutes = max(1, math.ceil(wait / 60))
    return f"Too many attempts; try again in {minutes} minute{'' if minutes == 1 else 's'}."


def login_wait(*, username: str, address: str) -> float:
    """Seconds until a login to this account from this address may be tried; 0 when it may be now.
    Refused logins are not counted, so waiting them out always works."""
    wait = 0.0
    for kind, value, spec in (("login-account", username, settings.CHAT_LOGIN_LIMIT),
                              ("login-address", address, settings.CHAT_LOGIN_ADDRESS_LIMIT)):
        limit = _limit(spec)
        if limit is not None:
            count, left = _safely(attempts().get, attempt_key(kind, value), default=(0, 0.0))
            if count >= limit[0]:
                wait = max(wait, left)
    return wait


def login_failure_record(*, username: str, address: str | None) -> None:
    """A wrong password (or unknown user), counted against the account and the address."""
    for kind, value, spec in (("login-account", username, settings.CHAT_LOGIN_LIMIT),
                              ("login-address", address, settings.CHAT_LOGIN_ADDRESS_LIMIT)):
        limit = _limit(spec)
        if limit is not None and value is not None:
            _safely(attempts().add, attempt_key(kind, value), limit[1], default=None)


def login_success_record(*, username: str) -> None:
    """The account's failures are forgotten (the address's are not: its owner may be guessing others)."""
    _safely(attempts().clear, attempt_key("login-account", username), default=None)


def signup_attempt(*, address: str) -> float:
    """Count a signup from this address: the seconds to wait when it is one too many, else 0."""
    limit = _limit(settings.CHAT_SIGNUP_LIMIT)
    if limit is None:
        return 0.0
    count, left = _safely(attempts().add, attempt_key("signup-address", address), limit[1], default=(0, 0.0))
    return left if count > limit[0] else 0.0


def socket_tags(scope: dict) -> tuple[str, str]:
    """What a socket remembers of how it was let in (chat/socket_auth.py): digests of its session key
    and of its user's session hash (a new password changes it), so events can name them without
    carrying either."""
    return _tag(scope["session_key"] or ""), _tag(scope["user"].get_session_auth_hash())


def socket_scope_release(scope: dict) -> None:
    """Once a socket has its tags and its user's id and name, let go of the user row, which the
    scope would otherwise keep for the socket's life."""
    scope["user"] = None


def session_end(*, user_id: int, session_key: str | None) -> None:
    """Logout: the session's sockets close with 4401 on every instance."""
    if session_key:
        after_commit(sockets_close, user_id=user_id, code=protocol.CLOSE_NOT_LOGGED_IN, session=_tag(session_key))


def user_password_changed(*, user) -> None:
    """A new password ends every session signed with the old one (Django's session hash): their
    sockets close with 4401 on every instance; a session re-signed since (update_session_auth_hash)
    opens new sockets with the new hash."""
    after_commit(sockets_close, user_id=user.pk, code=protocol.CLOSE_NOT_LOGGED_IN,
                 auth=_tag(user.get_session_auth_hash()))


def user_password_is_changing(*, user, update_fields) -> bool:
    """Whether saving `user` now stores a password other than the stored one (asked before the save)."""
    if user.pk is None or (update_fields is not None and "password" not in update_fields):
        return False
    stored = type(user)._default_manager.filter(pk=user.pk).values_list("password", flat=True).first()
    return stored is not None and stored != user.password


def _tag(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _limit(spec: str) -> tuple[int, float] | None:
    """'5/15m' -> (5 attempts, a window of 900 s); None when off ('0/...'). Units: s, m, h."""
    count, _, window = spec.partition("/")
    window = window.strip() or "1s"
    unit = {"s": 1, "m": 60, "h": 3600}.get(window[-1])
    seconds = float(window[:-1] or 1) * unit if unit else float(window)
    return (int(count), seconds) if int(count) > 0 else None


def _safely(call, *args, default):
    """Throttles fail open: Redis being away must not lock everyone out of their account."""
    try:
        return call(*args)
    except Exception as exc:  # noqa: BLE001 - any Redis error
        logger.warning("login/signup throttle unavailable (%s); letting the attempt through", exc)
        return default


def chat_profile_create(*, user) -> None:
    """Every user has a chat profile from signup on, so moderation never has to create one first."""
    from chat.models import ChatProfile

    ChatProfile.objects.get_or_create(user=user)
