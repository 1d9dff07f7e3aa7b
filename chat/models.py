"""Rooms, their members and messages, and the records staff moderation works with."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q, Value
from django.utils import timezone
from uuid6 import uuid7

# Slugs that start with this belong to direct messages only: no room a user creates may take one.
DM_SLUG_PREFIX = "dm-"


class Room(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    private = models.BooleanField(default=False)
    archived = models.BooleanField(default=False, help_text="Read-only: nobody may send, edit or delete there.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_rooms"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Set once the room has handed out a sequence number: tells a brand-new room from one whose
    # Redis counter was lost, which must then restart above anything possibly handed out.
    seq_started = models.BooleanField(default=False, editable=False)
    # For direct messages: "<lower user id>:<higher user id>", so a pair has exactly one room; a
    # DM is found by it, never by its slug, which another room may hold.
    direct_key = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="rooms")
    retention_days = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Keep this room's messages this many days; empty = the global CHAT_RETENTION_DAYS.")

    class Meta:
        ordering = ["name"]
        constraints = [
            # A DM made public (e.g. in the admin) would hand the pair's messages to everyone.
            models.CheckConstraint(condition=Q(direct_key__isnull=True) | Q(private=True),
                                   name="room_direct_is_private"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.direct_key is None and self.slug.startswith(DM_SLUG_PREFIX):
            raise ValidationError({"slug": f"Slugs starting with '{DM_SLUG_PREFIX}' are kept for direct messages."})
        if self.direct_key is not None and not self.private:
            raise ValidationError({"private": "A direct message is always private."})


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="membership_unique_room_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} ({self.role})"


class Message(models.Model):
    # Time-ordered (UUIDv7): a new row's key lands at the end of the primary-key index, not on a
    # random page of it.
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Neither foreign key has an index of its own: the unique (room, seq) index serves every lookup
    # by room, the unique (author, room, client_id) one every lookup by author, and each index is
    # paid for on every stored message.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.BigIntegerField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages",
                               db_index=False)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    edited_at = models.DateTimeField(null=True, blank=True)
    hidden = models.BooleanField(default=False, help_text="Hidden by a moderator.")
    deleted = models.BooleanField(default=False, help_text="Deleted by its author.")
    client_id = models.CharField(max_length=64, null=True, blank=True)
    # The message's revision (contract §8): 1 on create, +1 per change. The worker applies a record
    # only when its rev is newer, so a late or re-driven record never overwrites newer state.
    # Defaults in the database too (db_default): during a rolling deploy, workers and web instances
    # of the release before insert rows without these columns.
    rev = models.PositiveIntegerField(default=1, db_default=1)
    # The message this one answers, in the same room. No foreign key: the worker writes rows in bulk
    # and a parent may be pruned before its replies.
    reply_to = models.UUIDField(null=True, blank=True)
    # Full state as the records carry it: [{"emoji", "count", "users"}] and the attachments' metadata.
    reactions = models.JSONField(default=list, db_default=Value([], models.JSONField()), blank=True)
    attachments = models.JSONField(default=list, db_default=Value([], models.JSONField()), blank=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_unique_room_seq"),
            models.UniqueConstraint(fields=["author", "room", "client_id"], name="message_unique_client_id"),
        ]
        indexes = [models.Index(fields=["reply_to"], condition=Q(reply_to__isnull=False), name="message_reply_to")]

    def __str__(self) -> str:
        return f"{self.room.slug}#{self.seq}"

    @property
    def visible(self) -> bool:
        return not (self.hidden or self.deleted)


class ChatProfile(models.Model):
    """A user's standing in the chat: bans and mutes set by staff."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_profile")
    banned = models.BooleanField(default=False)
    muted_until = models.DateTimeField(null=True, blank=True, help_text="Muted until this time; empty = not muted.")
    # The stand-in of a deleted account (chat/services/erasure.py): shown as "deleted user".
    deleted_account = models.BooleanField(default=False, editable=False,
                                          help_text="The stand-in that holds a deleted user's messages and DMs.")

    def __str__(self) -> str:
        return f"chat profile of {self.user}"


class Report(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports")
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"report on {self.message_id} by {self.reporter}"


class ModerationAction(models.Model):
    """The audit trail of every moderation action: who did what to whom, when and why."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="moderation_actions"
    )
    action = models.CharField(max_length=32)
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} at {self.created_at:%Y-%m-%d %H:%M}"


class ReadState(models.Model):
    """How far a user has read a room: the highest seq seen, which never moves backwards."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="read_states")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="read_states")
    seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "room"], name="read_state_unique_user_room")]

    def __str__(self) -> str:
        return f"{self.user} read {self.room} to {self.seq}"


class Deployment(models.Model):
    """The one row naming this database's deployment. Each Redis shard holds it beside its room
    state, so state written for another database (a Postgres restored from a backup, a Redis shared
    by mistake) is told apart and every room there starts a new epoch. `deployment_renew` replaces it."""

    identity = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return str(self.identity)


class Mention(models.Model):
    """A message that mentions a user (contract §9): an `@username` of someone who may read the room,
    or any message of the other member of a DM. Written by the worker beside the message."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="mentions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mentions")
    # Copied from the message so a user's counts per room (after their read seq) need no join.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="mentions", db_index=False)
    seq = models.BigIntegerField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="mention_unique_message_user")]
        indexes = [models.Index(fields=["user", "room", "seq"], name="mention_user_room_seq")]

    def __str__(self) -> str:
        return f"{self.user} in {self.message_id}"


class Block(models.Model):
    """`blocker` blocked `blocked`: no DM from them, their mentions do not count (chat/services/blocks.py)."""

    blocker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks")
    blocked = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocked_by")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique_pair")]

    def __str__(self) -> str:
        return f"{self.blocker} blocked {self.blocked}"


def attachment_path(attachment: "Attachment", filename: str) -> str:
    """Where an upload is stored: by id, never by the name the user gave it."""
    return f"attachments/{attachment.created_at:%Y/%m}/{attachment.id}/{filename}"


class Attachment(models.Model):
    """An uploaded file (contract §8). Uploaded into a room by a user; claimed by one message of
    theirs when sent (`message_id`); served only through the app's own URL (chat/files.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=127, help_text="As sniffed from the content, not the name.")
    file = models.FileField(upload_to=attachment_path, max_length=500)
    thumbnail = models.FileField(upload_to=attachment_path, max_length=500, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # Set when a message claims it; with its client_id, so a retried send finds its own claim.
    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    client_id = models.CharField(max_length=64, null=True, blank=True)
    removed = models.BooleanField(default=False, help_text="Removed by staff: the file is gone.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["uploader", "created_at"], name="attachment_uploader_created")]

    def __str__(self) -> str:
        return self.name


class DeadLetterRedrive(models.Model):
    """The ledger of `manage.py deadletters redrive` (chat/services/deadletters.py): one row per
    dead letter tried, by its place in the dead-letter topic. An applied one is never re-driven
    again; a failed one is tried again by the next run."""

    class Outcome(models.TextChoices):
        APPLIED = "applied"
        FAILED = "failed"

    topic = models.CharField(max_length=255, help_text="The dead-letter topic (<topic>.dead).")
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    # Where the record came from (topic:partition:offset, the dead letter's `source` header): a
    # ledger row whose source differs belongs to an earlier topic of the same name, not this record.
    source = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=7, choices=Outcome.choices)
    detail = models.TextField(blank=True, help_text="New rows when applied; why, when failed.")
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["topic", "partition", "offset"],
                                               name="deadletterredrive_unique_place")]

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset} {self.outcome}"
