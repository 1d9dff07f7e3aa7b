"""Every existing user gets a chat profile (new ones get theirs when created: chat.receivers)."""

from django.conf import settings
from django.db import migrations


def create_profiles(apps, schema_editor):
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    chat_profile = apps.get_model("chat", "ChatProfile")
    missing = user_model.objects.filter(chat_profile__isnull=True).values_list("pk", flat=True)
    chat_profile.objects.bulk_create([chat_profile(user_id=pk) for pk in missing.iterator()], batch_size=1000,
                                     ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0012_room_archived_block"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_profiles, migrations.RunPython.noop)]
