"""The deployment's identity (chat.models.Deployment), created once with a new uuid."""

import uuid

import django.utils.timezone
from django.db import migrations, models


def create_identity(apps, schema_editor):
    Deployment = apps.get_model("chat", "Deployment")
    if not Deployment.objects.exists():
        Deployment.objects.create(identity=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("chat", "0009_database_roles")]

    operations = [
        migrations.CreateModel(
            name="Deployment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("identity", models.UUIDField(default=uuid.uuid4, unique=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.RunPython(create_identity, migrations.RunPython.noop),
    ]
