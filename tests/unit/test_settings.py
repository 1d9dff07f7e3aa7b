"""Start-up configuration (contract §1): what a process refuses and what it turns on, read in a
fresh interpreter with only the variables each case sets."""

import json
import os
import subprocess

from tests.support import PYTHON, ROOT

PROBE = ("import json, django; django.setup(); from django.conf import settings as s; "
         "print(json.dumps({k: getattr(s, k) for k in ['DEBUG', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', "
         "'SECURE_HSTS_SECONDS', 'SECURE_SSL_REDIRECT', 'EMBEDDED', 'KAFKA_TOPIC', 'CHAT_MAX_MESSAGE_LENGTH', "
         "'CHAT_RATE_LIMIT', 'ALLOWED_HOSTS']}))")


def start(**env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run([PYTHON, "-c", PROBE], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def settings_of(**env: str) -> dict:
    done = start(**env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_embedded_default_needs_nothing_and_uses_the_contract_defaults():
    s = settings_of()
    assert s["EMBEDDED"] and s["DEBUG"]
    assert (s["KAFKA_TOPIC"], s["CHAT_MAX_MESSAGE_LENGTH"], s["CHAT_RATE_LIMIT"]) == ("chat.messages", 4000, "20/10s")


def test_debug_off_without_secret_key_or_allowed_hosts_stops_with_a_clear_message():
    no_key = start(DEBUG="false", ALLOWED_HOSTS="chat.example.com")
    assert no_key.returncode != 0 and "SECRET_KEY must be set when DEBUG is off" in no_key.stderr
    no_hosts = start(DEBUG="false", SECRET_KEY="s" * 50)
    assert no_hosts.returncode != 0 and "ALLOWED_HOSTS must be set when DEBUG is off" in no_hosts.stderr


def test_production_turns_on_secure_cookies_and_lets_the_operator_switch_them():
    s = settings_of(DEBUG="false", SECRET_KEY="s" * 50, ALLOWED_HOSTS="chat.example.com")
    assert not s["DEBUG"] and s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    assert s["ALLOWED_HOSTS"] == ["chat.example.com"]
    switched = settings_of(DEBUG="false", SECRET_KEY="s" * 50, ALLOWED_HOSTS="chat.example.com",
                           SESSION_COOKIE_SECURE="false", SECURE_HSTS_SECONDS="31536000", SECURE_SSL_REDIRECT="true")
    assert not switched["SESSION_COOKIE_SECURE"]
    assert switched["SECURE_HSTS_SECONDS"] == 31536000 and switched["SECURE_SSL_REDIRECT"]


def test_service_urls_leave_the_embedded_default():
    s = settings_of(DEBUG="true", DATABASE_URL="postgres://chat:chat@127.0.0.1:5432/chat",
                    REDIS_URL="redis://127.0.0.1:6379/0", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092",
                    CHAT_MAX_MESSAGE_LENGTH="500", CHAT_RATE_LIMIT="5/1s", KAFKA_TOPIC="t")
    assert not s["EMBEDDED"]
    assert (s["KAFKA_TOPIC"], s["CHAT_MAX_MESSAGE_LENGTH"], s["CHAT_RATE_LIMIT"]) == ("t", 500, "5/1s")


def test_json_logs_are_one_object_a_line_with_request_and_connection_ids():
    probe = ("import django, logging; django.setup(); from chat import logcontext; "
             "logcontext.conn_id.set('c-1'); logging.getLogger('chat.test').warning('hello %s', 'world')")
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_FORMAT": "json"}
    done = subprocess.run([PYTHON, "-c", probe], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["level"] == "WARNING" and line["logger"] == "chat.test"
    assert line["conn_id"] == "c-1" and line["request_id"] == "-"


def test_the_web_application_keeps_full_garbage_collections_rare_and_short():
    probe = "import gc, config.asgi; print(gc.get_freeze_count(), gc.get_threshold()[0])"
    done = subprocess.run([PYTHON, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DEBUG": "true",
                               "DJANGO_SETTINGS_MODULE": "config.settings"})
    assert done.returncode == 0, done.stderr
    frozen, young_threshold = map(int, done.stdout.split())
    # Django, the apps and the libraries: tens of thousands of objects a full collection no longer walks.
    assert frozen > 10_000
    assert young_threshold >= 10_000  # a connect's short-lived objects die young instead of piling up
