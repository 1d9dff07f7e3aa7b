"""Accounts: sessions that end (logout, a new password) end their sockets on every instance."""

import hashlib

from chat import protocol
from chat.services.events import after_commit, sockets_close


def socket_tags(scope: dict) -> tuple[str, str]:
    """What a socket remembers of how it was let in: digests of its session key and of its user's
    session hash (a new password changes it), so events can name them without carrying either."""
    return _tag(scope["session"].session_key or ""), _tag(scope["user"].get_session_auth_hash())


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
