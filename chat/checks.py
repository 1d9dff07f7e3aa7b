"""Start-up checks: a process that would ack messages nobody stores refuses to start.

Django runs `durability_receivers` before `manage.py` commands (system checks); daphne and uvicorn
run no system checks, so config/asgi.py calls `require_durability` itself.
"""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register("chat")
def durability_receivers(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from django.conf import settings

    from chat.models import Message
    from chat.signals import DURABILITY_SIGNALS

    store = "Kafka" if settings.KAFKA_BOOTSTRAP_SERVERS else "the inline store"
    return [
        checks.Error(
            f"No receiver is connected to chat.signals.{name}: messages would be acknowledged without "
            f"reaching {store}.",
            hint="chat.apps.ChatConfig.ready() imports chat.receivers, which connects the persistence "
                 "receiver; check that 'chat' is in INSTALLED_APPS and nothing disconnects it.",
            id="chat.E001",
        )
        for name, signal in DURABILITY_SIGNALS.items()
        if not signal.has_listeners(Message)
    ]


def require_durability() -> None:
    """Raise ImproperlyConfigured with every durability check's message, if any fails."""
    errors = durability_receivers()
    if errors:
        raise ImproperlyConfigured("; ".join(f"{e.id}: {e.msg} {e.hint}" for e in errors))
