from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0016_room_retention_days'),
    ]

    operations = [
        migrations.AddField(
            model_name='chatprofile',
            name='deleted_account',
            field=models.BooleanField(default=False, editable=False, help_text="The stand-in that holds a deleted user's messages and DMs."),
        ),
    ]
