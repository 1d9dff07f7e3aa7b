"""The migrations describe the models: a model change without its migration fails here, not in production."""

from io import StringIO

from django.core.management import call_command


def test_no_model_change_is_missing_its_migration():
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit as exit:
        raise AssertionError(f"models changed without a migration:\n{out.getvalue()}") from exit
