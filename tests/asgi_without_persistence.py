"""The chat's ASGI app with its persistence receiver disconnected: what a server would load if a
refactor or a settings mistake dropped it. tests/integration/test_durability.py starts daphne and
uvicorn on it and expects them to refuse."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from chat.receivers import persist_record  # noqa: E402
from chat.signals import message_changed, message_sent  # noqa: E402

message_sent.disconnect(persist_record)
message_changed.disconnect(persist_record)

from config.asgi import application  # noqa: E402, F401
