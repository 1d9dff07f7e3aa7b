"""Write a user's data export (chat.services.export), the same JSON as the settings page's download."""

import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat.services.export import user_export_chunks


class Command(BaseCommand):
    help = "Write USERNAME's data (profile, own messages, rooms, read states, reactions, mentions) as JSON."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--output", "-o", help="File to write (default: stdout).")

    def handle(self, *args, username: str, output: str | None, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        if output is None:
            out = sys.stdout.buffer
            for chunk in user_export_chunks(user=user):
                out.write(chunk)
            out.flush()
            return
        with open(output, "wb") as out:
            for chunk in user_export_chunks(user=user):
                out.write(chunk)
        self.stderr.write(f"wrote {output}")
