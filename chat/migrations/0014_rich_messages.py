"""Reactions, replies and attachments (contract §8): the message's rev and full state, and uploads."""

import chat.models
import django.db.models.deletion
import django.utils.timezone
import uuid
from django.conf import settings
from django.db import migrations, models


# The messages table is the big one: on Postgres its new index is built without blocking writes.
REPLY_TO_INDEX = migrations.AddIndex(
    model_name='message',
    index=models.Index(condition=models.Q(('reply_to__isnull', False)), fields=['reply_to'], name='message_reply_to'),
)


def reply_to_index_create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS message_reply_to ON chat_message (reply_to) "
                              "WHERE reply_to IS NOT NULL")
    else:
        schema_editor.add_index(apps.get_model("chat", "Message"), REPLY_TO_INDEX.index)


def reply_to_index_drop(apps, schema_editor):
    schema_editor.execute("DROP INDEX IF EXISTS message_reply_to")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [
        ('chat', '0013_chat_profile_for_every_user'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Attachment',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('name', models.CharField(max_length=255)),
                ('size', models.BigIntegerField()),
                ('content_type', models.CharField(help_text='As sniffed from the content, not the name.', max_length=127)),
                ('file', models.FileField(max_length=500, upload_to=chat.models.attachment_path)),
                ('thumbnail', models.FileField(blank=True, max_length=500, upload_to=chat.models.attachment_path)),
                ('width', models.PositiveIntegerField(blank=True, null=True)),
                ('height', models.PositiveIntegerField(blank=True, null=True)),
                ('message_id', models.UUIDField(blank=True, db_index=True, null=True)),
                ('client_id', models.CharField(blank=True, max_length=64, null=True)),
                ('removed', models.BooleanField(default=False, help_text='Removed by staff: the file is gone.')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddField(
            model_name='message',
            name='attachments',
            field=models.JSONField(blank=True, db_default=models.Value([], models.JSONField()), default=list),
        ),
        migrations.AddField(
            model_name='message',
            name='reactions',
            field=models.JSONField(blank=True, db_default=models.Value([], models.JSONField()), default=list),
        ),
        migrations.AddField(
            model_name='message',
            name='reply_to',
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='message',
            name='rev',
            field=models.PositiveIntegerField(db_default=1, default=1),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[REPLY_TO_INDEX],
            database_operations=[migrations.RunPython(reply_to_index_create, reply_to_index_drop)],
        ),
        migrations.AddField(
            model_name='attachment',
            name='room',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='attachments', to='chat.room'),
        ),
        migrations.AddField(
            model_name='attachment',
            name='uploader',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='attachments', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='attachment',
            index=models.Index(fields=['uploader', 'created_at'], name='attachment_uploader_created'),
        ),
    ]
