"""After restoring Postgres from a backup: give the deployment a new identity, so every Redis
shard's state (written for the database as it was) starts new epochs instead of being trusted."""

from django.core.management.base import BaseCommand

from chat.services.rooms import deployment_renew


class Command(BaseCommand):
    help = "Give this database a new deployment identity (run after restoring Postgres from a backup)."

    def handle(self, *args, **options) -> None:
        identity = deployment_renew()
        self.stdout.write(f"deployment identity is now {identity}; web instances pick it up within a minute")
