"""Mentions (contract §9): one row per (message, mentioned user), written by the worker. And the
sidebar's rule that a public room is a user's once they joined it (a Membership, made when they
open it): users who opened or posted in a public room before get their Membership now."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def memberships_for_joined_public_rooms(apps, schema_editor):
    Membership = apps.get_model("chat", "Membership")
    ReadState = apps.get_model("chat", "ReadState")
    Message = apps.get_model("chat", "Message")
    joined = set(ReadState.objects.filter(room__private=False).values_list("room_id", "user_id"))
    joined |= set(Message.objects.filter(room__private=False).values_list("room_id", "author_id").distinct())
    joined -= set(Membership.objects.values_list("room_id", "user_id"))
    Membership.objects.bulk_create([Membership(room_id=room, user_id=user) for room, user in joined],
                                   batch_size=1000, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0010_deployment"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Mention",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("seq", models.BigIntegerField()),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                ("message", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="mentions",
                                              to="chat.message")),
                ("room", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                           related_name="mentions", to="chat.room")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="mentions",
                                           to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "indexes": [models.Index(fields=["user", "room", "seq"], name="mention_user_room_seq")],
                "constraints": [
                    models.UniqueConstraint(fields=("message", "user"), name="mention_unique_message_user"),
                ],
            },
        ),
        migrations.RunPython(memberships_for_joined_public_rooms, migrations.RunPython.noop),
    ]
