"""The ledger of `manage.py deadletters redrive`: one row per dead letter re-driven, applied or failed."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0014_rich_messages'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeadLetterRedrive',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('topic', models.CharField(help_text='The dead-letter topic (<topic>.dead).', max_length=255)),
                ('partition', models.IntegerField()),
                ('offset', models.BigIntegerField()),
                ('source', models.CharField(blank=True, max_length=300)),
                ('outcome', models.CharField(choices=[('applied', 'Applied'), ('failed', 'Failed')], max_length=7)),
                ('detail', models.TextField(blank=True, help_text='New rows when applied; why, when failed.')),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('topic', 'partition', 'offset'), name='deadletterredrive_unique_place')],
            },
        ),
    ]
