"""Reads: rooms a user may see, their sidebar, history pages, messages for replay, mentions."""

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Exists, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from chat import permissions, protocol
from chat.errors import ChatError, Forbidden, NotFound
from chat.models import Block, ChatProfile, Membership, Mention, Message, ReadState, Room


def room_object(room: Room, last_seq: int | None = None) -> dict:
    obj = {"slug": room.slug, "name": room.name, "private": room.private, "archived": room.archived}
    if last_seq is not None:
        obj["last_seq"] = last_seq
    return obj


def rooms_for_user(user) -> list[dict]:
    """The rooms the user may read (permissions.readable_rooms), with unread and mention counts.
    `joined`: in the user's sidebar (sidebar_rooms); `direct`: a DM, `dm_with` its other member's
    username."""
    # Nested inside the counts below, so the room is two queries out.
    read_to = Coalesce(Subquery(ReadState.objects.filter(user=user, room=OuterRef(OuterRef("pk"))).values("seq")[:1]),
                       0)
    unread = (
        Message.objects.filter(room=OuterRef("pk"), hidden=False, deleted=False, seq__gt=read_to)
        .exclude(author=user).order_by().values("room").annotate(count=Count("id")).values("count")
    )
    mentions = (
        Mention.objects.filter(user=user, room=OuterRef("pk"), seq__gt=read_to, message__hidden=False,
                               message__deleted=False)
        .exclude(message__author__in=_blocked(user))
        .order_by().values("room").annotate(count=Count("id")).values("count")
    )
    memberships = Membership.objects.filter(room=OuterRef("pk"), user=user)
    opened = ReadState.objects.filter(room=OuterRef("pk"), user=user)
    # Each figure is a subquery of its own on the (room, seq) index: joining the messages to take
    # their Max would group every message of every room, and Postgres then runs the unread count
    # once per message row (minutes for a room of 20 000 messages).
    newest = Message.objects.filter(room=OuterRef("pk")).order_by("-seq")
    rooms = (
        permissions.readable_rooms(user)
        .annotate(last_seq=Subquery(newest.values("seq")[:1]), last_activity=Subquery(newest.values("created_at")[:1]),
                  unread=Coalesce(Subquery(unread), 0), mention_count=Coalesce(Subquery(mentions), 0),
                  member=Exists(memberships), opened=Exists(opened))
        .order_by("name")
    )
    rooms = list(rooms)
    dm_with = _dm_partners(user, [room.pk for room in rooms if room.direct_key])
    return [{**room_object(room, room.last_seq or 0), "unread": room.unread, "mentions": room.mention_count,
             "last_activity": protocol.isoformat(room.last_activity),
             "joined": room.member or (room.opened and not room.private),
             "direct": room.direct_key is not None, "dm_with": dm_with.get(room.pk)} for room in rooms]


def _blocked(user):
    """The users `user` blocked, as a subquery: their mentions of `user` do not count (chat.services.blocks)."""
    return Block.objects.filter(blocker=user).values("blocked_id")


def _dm_partners(user, room_ids: list[int]) -> dict[int, str]:
    """DM room id -> the other member's username."""
    if not room_ids:
        return {}
    return dict(Membership.objects.filter(room_id__in=room_ids).exclude(user=user)
                .values_list("room_id", "user__username"))


def sidebar_rooms(user_id: int) -> dict[int, bool]:
    """The rooms of the user's sidebar, as room id -> whether it is a DM: of the rooms they may
    read, those they are a member of (created, were added, a DM) and the public ones they opened
    (a read state, made when they open it). Opening a room never makes a member: a public room
    made private keeps only its members."""
    rooms = permissions.readable_rooms(user_id).filter(
        Q(pk__in=Membership.objects.filter(user_id=user_id).values("room_id"))
        | Q(private=False, pk__in=ReadState.objects.filter(user_id=user_id).values("room_id")))
    return {room_id: direct_key is not None for room_id, direct_key in rooms.values_list("pk", "direct_key")}


def mentions_for_user(user, *, limit: int) -> list[dict]:
    """The visible messages that mention the user, in rooms they may still read, newest first."""
    rows = (Message.objects.filter(pk__in=Mention.objects.filter(user=user).values("message_id"),
                                   room__in=permissions.readable_rooms(user).values("pk"),
                                   hidden=False, deleted=False)
            .exclude(author__in=_blocked(user))
            .select_related("author", "room").order_by("-created_at", "-seq")[:limit])
    return messages_to_objects(list(rows))


def read_seq(user_id: int, room_id: int) -> int:
    return ReadState.objects.filter(user_id=user_id, room_id=room_id).values_list("seq", flat=True).first() or 0


def messages_search(user, *, query: str, room_slug: str | None, limit: int) -> list[dict]:
    """Visible messages matching `query` in rooms the user may read, newest first."""
    rooms = permissions.readable_rooms(user)
    if room_slug is not None:
        rooms = rooms.filter(slug=room_slug)
    messages = Message.objects.filter(room__in=rooms.values("pk"), hidden=False, deleted=False)
    if connection.vendor == "postgresql":
        # The same expression as the GIN index (migration 0004), so Postgres can use it.
        vector = SearchVector("body", config="simple")
        messages = messages.annotate(search=vector).filter(
            search=SearchQuery(query, config="simple", search_type="websearch"))
    else:
        messages = messages.filter(body__icontains=query)
    rows = messages.select_related("author", "room").order_by("-created_at", "-seq")[:limit]
    return messages_to_objects(list(rows))


def room_for_user(user, slug: str) -> Room:
    """The room, if the user may read it. A private room the user is not in looks like no room."""
    room = permissions.readable_rooms(user).filter(slug=slug).first()
    if room is None:
        raise NotFound(f"No room '{slug}'.")
    return room


def room_for_socket(requests: list[tuple[int, str]]) -> list[dict | ChatError]:
    """For each (user id, slug) a socket asks to join, read together in four queries however many:
    the room (id, slug, name, private, archived, direct_key), the user's standing (`muted_until`)
    and whether they opened it before (`opened`, a read state); or the NotFound / Forbidden (banned,
    not a member of a private room) that refuses it. Who may read is permissions.readable_rooms'
    rule (a public room, or a private one the user is a member of), asked for every pair at once."""
    rooms = {room["slug"]: room for room in Room.objects.filter(slug__in={slug for _, slug in requests})
             .values("id", "slug", "name", "private", "archived", "direct_key")}
    user_ids = {user_id for user_id, _ in requests}
    private = {room["id"] for room in rooms.values() if room["private"]}
    members = set(Membership.objects.filter(room_id__in=private, user_id__in=user_ids)
                  .values_list("room_id", "user_id")) if private else set()
    profiles = {profile.user_id: profile for profile in ChatProfile.objects.filter(user_id__in=user_ids)
                .only("user_id", "banned", "muted_until")}
    public = {room["id"] for room in rooms.values() if not room["private"]}
    opened = set(ReadState.objects.filter(room_id__in=public, user_id__in=user_ids)
                 .values_list("room_id", "user_id")) if public else set()
    out: list[dict | ChatError] = []
    for user_id, slug in requests:
        room = rooms.get(slug)
        profile = profiles.get(user_id)
        if room is None:
            out.append(NotFound(f"No room '{slug}'."))
        elif (room["private"] and (room["id"], user_id) not in members) or permissions.is_banned(profile):
            out.append(Forbidden("You may not join this room."))
        else:
            out.append({"room": room, "muted_until": profile.muted_until if profile else None,
                        "opened": (room["id"], user_id) in opened})
    return out


def user_is_banned(user) -> bool:
    return permissions.is_banned(ChatProfile.objects.filter(user=user).first())


def room_max_seq(room_id: int) -> int:
    return Message.objects.filter(room_id=room_id).aggregate(m=Max("seq"))["m"] or 0


def rooms_max_seq(room_ids: list[int]) -> list[int]:
    """room_max_seq of each room, in one query: each room's newest seq read off the (room, seq)
    index, not a scan of its messages."""
    newest = Message.objects.filter(room_id=OuterRef("pk")).order_by("-seq").values("seq")[:1]
    found = dict(Room.objects.filter(id__in=set(room_ids)).annotate(m=Subquery(newest)).values_list("id", "m"))
    return [found.get(room_id) or 0 for room_id in room_ids]


def message_to_object(message: Message, room_slug: str, parents: dict | None = None) -> dict:
    """The message object of a row. `parents`: the rows replied to, by id (messages_to_objects loads
    them); without it the parent is read here."""
    reply_to = None
    if message.reply_to is not None:
        if parents is None:
            parents = _parents([message])
        reply_to = _reply_to_object(message.reply_to, parents.get(message.reply_to))
    return protocol.message_object(
        id=str(message.id),
        room=room_slug,
        seq=message.seq,
        author_id=message.author_id,
        author_username=message.author.username,
        body=message.body,
        created_at=message.created_at,
        edited_at=message.edited_at,
        client_id=message.client_id,
        rev=message.rev,
        reply_to=reply_to,
        reactions=message.reactions,
        attachments=message.attachments,
    )


def messages_to_objects(messages: list[Message], room_slug: str | None = None) -> list[dict]:
    """Message objects of rows (of one room, or each its room's slug), their parents read in one query."""
    parents = _parents(messages)
    return [message_to_object(m, room_slug or m.room.slug, parents) for m in messages]


def _parents(messages: list[Message]) -> dict:
    wanted = {m.reply_to for m in messages if m.reply_to is not None}
    if not wanted:
        return {}
    return {m.id: m for m in Message.objects.filter(id__in=wanted).select_related("author")}


def _reply_to_object(parent_id, parent: Message | None) -> dict:
    """A reply's quote as the parent is now: deleted (or pruned) and hidden ones without their text."""
    if parent is None:
        return {"id": str(parent_id), "seq": None, "author": None, "excerpt": "", "state": "deleted"}
    state = "hidden" if parent.hidden else "deleted" if parent.deleted else "visible"
    shown = {"id": str(parent.id), "seq": parent.seq, "body": parent.body,
             "author": {"id": parent.author_id, "username": parent.author.username}}
    return protocol.reply_to_object(shown, state=state)


def reply_counts(message_ids: list) -> dict[str, int]:
    """Visible replies per message id (the history API's `reply_count`)."""
    rows = (Message.objects.filter(reply_to__in=message_ids, hidden=False, deleted=False)
            .values("reply_to").annotate(count=Count("id")).order_by())
    return {str(row["reply_to"]): row["count"] for row in rows}


def _visible(room: Room):
    return Message.objects.filter(room=room, hidden=False, deleted=False).select_related("author")


def history_page(room: Room, *, after: int | None, before: int | None, limit: int) -> tuple[list[dict], bool]:
    """A page in ascending seq: the oldest `limit` above `after`, else the newest `limit` below `before`."""
    messages = _visible(room)
    if after is not None:
        rows = list(messages.filter(seq__gt=after).order_by("seq")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
    else:
        if before is not None:
            messages = messages.filter(seq__lt=before)
        rows = list(messages.order_by("-seq")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit][::-1]
    objects = messages_to_objects(rows, room.slug)
    counts = reply_counts([m.id for m in rows])
    return [{**obj, "reply_count": counts.get(obj["id"], 0)} for obj in objects], has_more


def persisted_page(room: Room, *, after: int, limit: int) -> list[dict]:
    """The first `limit` persisted messages with seq > after, ascending; hidden and deleted ones as
    `message.deleted` frames, so a replay can tell."""
    rows = list(Message.objects.filter(room=room, seq__gt=after).select_related("author").order_by("seq")[:limit])
    parents = _parents([m for m in rows if m.visible])
    return [protocol.message_frame(message_to_object(m, room.slug, parents)) if m.visible
            else protocol.deleted_frame(id=str(m.id), seq=m.seq) for m in rows]


def message_for_change(message_id: str) -> dict | None:
    """A stored message: its object, room and visibility, and its `frame` as the room's state keeps
    it (a tombstone once deleted or hidden), for changes and reports."""
    try:
        message = Message.objects.select_related("author", "room").get(id=message_id)
    except (Message.DoesNotExist, ValidationError, ValueError):
        return None
    obj = message_to_object(message, message.room.slug)
    frame = (protocol.message_frame(obj) if message.visible else
             protocol.tombstone_frame(id=obj["id"], seq=message.seq, rev=message.rev, hidden=message.hidden))
    return {"message": obj, "room_id": message.room_id, "visible": message.visible, "frame": frame}


def message_context(message: Message, *, around: int = 3) -> list[Message]:
    """`message` between up to `around` visible messages of its room before and after it, in seq order."""
    neighbours = Message.objects.filter(room_id=message.room_id, hidden=False, deleted=False).select_related("author")
    before = list(neighbours.filter(seq__lt=message.seq).order_by("-seq")[:around])
    after = list(neighbours.filter(seq__gt=message.seq).order_by("seq")[:around])
    return [*before[::-1], message, *after]
