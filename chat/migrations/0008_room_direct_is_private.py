"""A direct-message room is always private: rooms made public before are made private again, then
the database holds it as a constraint."""

from django.db import migrations, models


def direct_rooms_private(apps, schema_editor):
    apps.get_model("chat", "Room").objects.filter(direct_key__isnull=False, private=False).update(private=True)


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0007_message_id_time_ordered'),
    ]

    operations = [
        migrations.RunPython(direct_rooms_private, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='room',
            constraint=models.CheckConstraint(
                condition=models.Q(('direct_key__isnull', True), ('private', True), _connector='OR'),
                name='room_direct_is_private',
            ),
        ),
    ]
