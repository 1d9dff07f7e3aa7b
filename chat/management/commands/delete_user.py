"""Delete a user's account (chat.services.erasure): closed at once everywhere, their messages kept
under a "deleted user" stand-in or removed, then the user row deleted. Progress goes to stdout."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat.errors import ChatError
from chat.services import erasure


class Command(BaseCommand):
    help = "Delete USERNAME's account; their messages are kept under a deleted-user stand-in or removed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--messages", choices=erasure.MODES,
                            help="keep or remove the user's messages (default: CHAT_DELETED_USER_MESSAGES).")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, username: str, messages: str | None, yes: bool, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        try:
            mode = erasure.deletion_mode(messages)
        except erasure.DeletionRefused as exc:
            raise CommandError(str(exc)) from None
        if not yes:
            answer = input(f"Delete the account {username!r} for good, its messages: {mode}? Type 'yes': ")
            if answer.strip().lower() != "yes":
                raise CommandError("Nothing deleted.")
        try:
            done = erasure.user_delete(user=user, messages=mode, progress=self.stdout.write)
        except erasure.DeletionRefused as exc:
            raise CommandError(str(exc)) from None
        except ChatError as exc:  # Kafka refused a record, say: what is done stays done
            raise CommandError(f"{exc.detail} The account is closed; run the command again to finish.") from None
        self.stdout.write(f"deleted {username}: messages {done.mode} under {done.stand_in}")
