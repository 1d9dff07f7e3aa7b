"""Full-text search over message bodies: a GIN index on the same expression the search query uses
(Postgres only; SQLite, the embedded default, searches without an index)."""

from django.db import migrations

INDEX = "chat_message_body_search"
EXPRESSION = "to_tsvector('simple'::regconfig, COALESCE(body, ''))"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON chat_message USING gin ({EXPRESSION})")


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0003_read_state_direct_rooms")]

    operations = [migrations.RunPython(create_index, drop_index)]
