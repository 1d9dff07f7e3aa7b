"""Actions by domain: every change to chat state goes through one function in one of these modules.

- `rooms`: create rooms, open direct messages, add members, seed a room's sequence
- `presence`: who is in a room (join, hello, online list), typing, read marks
- `sending`: send (a socket's sends in order, batched) and confirm
- `messages`: edit, delete, hide and restore under the message's rev, report, replay
- `moderation`: bans, mutes, hiding messages, resolving reports, the moderation log
- `persistence`: what the worker (or the embedded default's inline store) applies to Postgres
- `events`: the live side shared by the others (room broadcasts, user-wide events, signals)

Async actions run on a web process's event loop (the socket path); ORM work inside them goes
through `database_sync_to_async`. Sync actions serve views, the admin and the worker. Callers import
from the domain module.
"""
