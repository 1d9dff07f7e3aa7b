"""Mentions (contract §9): one row per (message, mentioned user), written by the worker."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


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
    ]
