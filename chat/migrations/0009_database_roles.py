"""Rights for the deployment's web and worker roles, chat_web and chat_worker, where they exist
(docs/deployment.md, "Database roles"; Postgres only).

The role that migrates owns the tables. The two others may read and write the rows of every table
it has created and will create (default privileges, so later migrations need no grants of their
own), and nothing more. The search index's pending entries can be merged only by the index's
owner: chat_search_index_tidy() does that as the owner, and only chat_worker may call it.
"""

from django.db import migrations

ROLES = ("chat_web", "chat_worker")
TIDY_ROLE = "chat_worker"
INDEX = "chat_message_body_search"  # migration 0004
TIDY = "chat_search_index_tidy"


def _schema_and_roles(schema_editor) -> tuple[str, list[str]]:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
        cursor.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", [list(ROLES)])
        return schema, [role for (role,) in cursor.fetchall()]


def grant(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema, roles = _schema_and_roles(schema_editor)
    quote = schema_editor.quote_name
    in_schema = f"IN SCHEMA {quote(schema)}"
    for role in map(quote, roles):
        schema_editor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES {in_schema} TO {role}")
        schema_editor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES {in_schema} TO {role}")
        schema_editor.execute(f"ALTER DEFAULT PRIVILEGES {in_schema} GRANT SELECT, INSERT, UPDATE, DELETE "
                              f"ON TABLES TO {role}")
        schema_editor.execute(f"ALTER DEFAULT PRIVILEGES {in_schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}")
    # SECURITY DEFINER: runs as its owner, the index's; the search path is pinned so that nothing a
    # caller puts on theirs runs with the owner's rights.
    schema_editor.execute(
        f"CREATE OR REPLACE FUNCTION {quote(schema)}.{TIDY}() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
        f"SET search_path = pg_catalog, pg_temp "
        f"AS $$ SELECT gin_clean_pending_list('{quote(schema)}.{INDEX}'::regclass) $$"
    )
    schema_editor.execute(f"REVOKE ALL ON FUNCTION {quote(schema)}.{TIDY}() FROM PUBLIC")
    if TIDY_ROLE in roles:
        schema_editor.execute(f"GRANT EXECUTE ON FUNCTION {quote(schema)}.{TIDY}() TO {quote(TIDY_ROLE)}")


def revoke(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema, roles = _schema_and_roles(schema_editor)
    quote = schema_editor.quote_name
    in_schema = f"IN SCHEMA {quote(schema)}"
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {quote(schema)}.{TIDY}()")
    for role in map(quote, roles):
        schema_editor.execute(f"ALTER DEFAULT PRIVILEGES {in_schema} REVOKE ALL ON SEQUENCES FROM {role}")
        schema_editor.execute(f"ALTER DEFAULT PRIVILEGES {in_schema} REVOKE ALL ON TABLES FROM {role}")
        schema_editor.execute(f"REVOKE ALL ON ALL SEQUENCES {in_schema} FROM {role}")
        schema_editor.execute(f"REVOKE ALL ON ALL TABLES {in_schema} FROM {role}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0008_room_direct_is_private")]

    operations = [migrations.RunPython(grant, revoke)]
