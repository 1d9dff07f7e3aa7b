"""The staff's moderation desk. Every moderation action goes through a service, which records it
and makes it take effect live on every instance; nothing here changes chat state by hand. Actions
need Django's permissions (change on the model, `chat.change_chatprofile` to ban or mute); bodies
of conversations the user cannot read are shown only when reported, to staff who may act on
reports (permissions.moderation_messages), and each such showing is logged.

rooms: rooms and members; content: messages and reports; attachments: uploads and their removal;
users: users and their chat profiles; log: the moderation log; desk: the page that gathers what
needs attention; confirm: the ask-first pages the actions share."""

from chat.admin import attachments, content, desk, log, rooms, users  # noqa: F401  (registers the model admins)
