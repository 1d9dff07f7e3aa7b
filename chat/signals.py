"""The chat's signals. Receivers run after the live broadcast; the sender is acked once they return.

`message_sent` fires for every new message, `message_changed` for edits, deletes and moderation;
both carry `record`, the Kafka record (contract §5) describing the message's full new state.
"""

from django.dispatch import Signal

message_sent = Signal()
message_changed = Signal()
