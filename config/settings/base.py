"""Project settings, read from the environment (and `.env` when present) in this one place.

With none of DATABASE_URL, REDIS_URL and KAFKA_BOOTSTRAP_SERVERS set the project runs on the
embedded default: a SQLite file, the in-process channel layer and inline storage (no Kafka).
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.redis_urls import layer_host, redis_shards

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DATABASE_URL = env.str("DATABASE_URL", default="")
# One spec per Redis shard (contract §7): REDIS_URLS, or REDIS_URL alone as the one shard.
REDIS_SHARDS = redis_shards(env.str("REDIS_URLS", default=""), env.str("REDIS_URL", default=""))
REDIS_URL = env.str("REDIS_URL", default="")
KAFKA_BOOTSTRAP_SERVERS = env.list("KAFKA_BOOTSTRAP_SERVERS", default=[])
EMBEDDED = not (DATABASE_URL or REDIS_SHARDS or KAFKA_BOOTSTRAP_SERVERS)

DEBUG = env.bool("DEBUG", default=EMBEDDED)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off (comma-separated hosts).")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "chat",
]

MIDDLEWARE = [
    "chat.logcontext.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url_config(DATABASE_URL)
    if DATABASE_URL
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
}
# A web process's WebSocket database work (channels' database_sync_to_async) runs on one thread, so
# its connection is kept and reused: a new one per call (with SCRAM authentication) made a socket's
# join cost about 17 ms of CPU, 31 joins/s per process (docs/performance.md). HTTP requests run on
# a thread each under ASGI and close theirs when they end (chat/receivers.py). A kept connection is
# checked before reuse, so one that died with a Postgres restart is replaced, not failed on.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_SHARDS:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub fans each group message out once per subscribed instance and never drops
            # silently at a per-channel capacity, which is what the per-process room hub needs.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # Rooms' events do not use it (chat.hub subscribes on each room's own shard); it carries
            # user-wide events and the hub group over the same shards with its own hashing.
            "CONFIG": {
                "hosts": [layer_host(shard) for shard in REDIS_SHARDS],
                "prefix": env.str("CHAT_LAYER_PREFIX", default="chat-layer"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
# Mail (password reset): EMAIL_URL such as smtp+tls://user:password@mail.example.com:587; the console
# backend by default, so the mail shows in the process's output.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="chat@localhost")
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve the app's static files even where `collectstatic` has not run (tests, `make stack`).
WHITENOISE_USE_FINDERS = True

# Production hardening, switchable by environment where a proxy terminates TLS.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The chat itself.
KAFKA_TOPIC = env.str("KAFKA_TOPIC", default="chat.messages")
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=8)
# Replicas of the topics the app creates (the dead-letter topic too) and their min.insync.replicas;
# unset: 3, or the cluster's broker count when fewer, and 2 when the factor is 3, else 1 (chat/bus/topics.py).
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", default=None)
KAFKA_MIN_INSYNC_REPLICAS = env.int("KAFKA_MIN_INSYNC_REPLICAS", default=None)
# How every Kafka client connects (chat/bus/client.py): PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL;
# SASL with PLAIN or SCRAM-SHA-256/512 and a username and password; the CA that signed the brokers'
# certificates (else the system's).
KAFKA_SECURITY_PROTOCOL = env.str("KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT")
KAFKA_SASL_MECHANISM = env.str("KAFKA_SASL_MECHANISM", default="")
KAFKA_SASL_USERNAME = env.str("KAFKA_SASL_USERNAME", default="")
KAFKA_SASL_PASSWORD = env.str("KAFKA_SASL_PASSWORD", default="")
KAFKA_SSL_CAFILE = env.str("KAFKA_SSL_CAFILE", default="")
# How long the producer keeps retrying a record before the sender is told `not_persisted`.
KAFKA_DELIVERY_TIMEOUT_MS = env.int("KAFKA_DELIVERY_TIMEOUT_MS", default=30_000)
# How long a web instance's producer waits to batch records for Kafka: fewer produce requests under
# load (kafka-python spends about 2 ms of CPU on each), at most this much added to every ack.
KAFKA_LINGER_MS = env.int("KAFKA_LINGER_MS", default=2)
# The workers' consumer group; web instances watch its progress when a resume reaches past the
# recent buffer (CHAT_REPLAY_CATCHUP_SECONDS).
KAFKA_CONSUMER_GROUP = env.str("KAFKA_CONSUMER_GROUP", default="chat-store")
# How long the broker may hold a worker's fetch while gathering a batch (up to 64 KB): under light
# traffic fewer, larger writes and commits instead of one each per message, for at most this delay
# before a message is stored. Under load batches fill at once and nothing waits.
WORKER_BATCH_WAIT_MS = env.int("WORKER_BATCH_WAIT_MS", default=100)
# How long the group waits for a worker that stopped answering before its partitions go to the
# others (heartbeats every third of it); the brokers' group.min.session.timeout.ms (6 s) is the floor.
WORKER_SESSION_TIMEOUT_MS = env.int("WORKER_SESSION_TIMEOUT_MS", default=6_000)
# Static group membership (also --instance-id): a worker restarted with the same id gets its
# partitions back at once, without a rebalance. Unique per worker; '{hostname}' is replaced.
WORKER_INSTANCE_ID = env.str("WORKER_INSTANCE_ID", default="")
# The worker's Prometheus endpoint (0 turns it off; give each worker on one host its own port).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDR = env.str("WORKER_METRICS_ADDR", default="127.0.0.1")
CHAT_MAX_MESSAGE_LENGTH = env.int("CHAT_MAX_MESSAGE_LENGTH", default=4000)
CHAT_RATE_LIMIT = env.str("CHAT_RATE_LIMIT", default="20/10s")
CHAT_REDIS_PREFIX = env.str("CHAT_REDIS_PREFIX", default="chat")
CHAT_RECENT_BUFFER = env.int("CHAT_RECENT_BUFFER", default=1000)
# A room's recent buffer leaves Redis once nobody has sent in it for this long (replays then read
# Postgres); its seq counter stays (docs/scaling.md, "Redis memory").
CHAT_ROOM_IDLE_SECONDS = env.int("CHAT_ROOM_IDLE_SECONDS", default=3600)
# How long a send's client_id is remembered, so a retry gets the first message's id and seq (contract §4).
CHAT_IDEMPOTENCY_WINDOW = env.int("CHAT_IDEMPOTENCY_WINDOW", default=24 * 3600)
# Days messages are kept (`manage.py prune_messages`; a room's own retention_days wins); unset, empty
# or 0: for ever (docs/operations.md, "Retention").
CHAT_RETENTION_DAYS = env.int("CHAT_RETENTION_DAYS") if env.str("CHAT_RETENTION_DAYS", default="").strip() else None
# A resume that reaches past the recent buffer reads Postgres; it first waits up to this long for
# the workers to store what Kafka holds for the room (messages still in Kafka are not in Postgres).
CHAT_REPLAY_CATCHUP_SECONDS = env.float("CHAT_REPLAY_CATCHUP_SECONDS", default=10.0)
# Messages a replay (?after=, resume) reads and queues at a time; the next page waits until the
# socket has taken the last, so a replay of any length holds one page per socket.
CHAT_REPLAY_PAGE = env.int("CHAT_REPLAY_PAGE", default=500)
CHAT_PRESENCE_TTL = env.int("CHAT_PRESENCE_TTL", default=30)
# A process gathers a room's presence changes this long, from the first, before it sends one frame
# with the newest online list; 0: at once.
CHAT_PRESENCE_COALESCE_SECONDS = env.float("CHAT_PRESENCE_COALESCE_SECONDS", default=1.0)
# The same while a tenth of CHAT_MAX_PENDING_JOINS or more joins are under way in the process, or as
# many ended in the last second (a reconnect storm): presence frames to every socket of a room are
# what can wait.
CHAT_PRESENCE_CROWDED_COALESCE_SECONDS = env.float("CHAT_PRESENCE_CROWDED_COALESCE_SECONDS", default=5.0)
# On SIGTERM, how long a web instance waits for its sockets to close (1012) before it exits.
# Bytes of live frames queued for one socket before it counts as not reading and is cut (4408).
CHAT_SOCKET_BUFFER_BYTES = env.int("CHAT_SOCKET_BUFFER_BYTES", default=1024 * 1024)
CHAT_DRAIN_SECONDS = env.float("CHAT_DRAIN_SECONDS", default=5.0)
# ...after failing /readyz for this long first, so the load balancer sends reconnects elsewhere.
CHAT_DRAIN_GRACE_SECONDS = env.float("CHAT_DRAIN_GRACE_SECONDS", default=2.0)
# Seconds between two "typing" starts (and two stops) of one user in one room that are relayed
# (clients send a start every 3 s while typing).
CHAT_TYPING_THROTTLE = env.float("CHAT_TYPING_THROTTLE", default=2.0)
# What one user may send, per kind of frame, across every instance (burst/window, like
# CHAT_RATE_LIMIT; past it `error: rate_limited` with retry_after). Each is several times what the
# web client sends at most: typing every 3 s, a read mark per 0.8 s of new messages, no resume frame.
CHAT_EDIT_RATE_LIMIT = env.str("CHAT_EDIT_RATE_LIMIT", default="10/10s")  # message.edit and message.delete
CHAT_REPORT_RATE_LIMIT = env.str("CHAT_REPORT_RATE_LIMIT", default="5/60s")
CHAT_READ_RATE_LIMIT = env.str("CHAT_READ_RATE_LIMIT", default="20/10s")
CHAT_TYPING_RATE_LIMIT = env.str("CHAT_TYPING_RATE_LIMIT", default="20/10s")
CHAT_RESUME_RATE_LIMIT = env.str("CHAT_RESUME_RATE_LIMIT", default="10/60s")
CHAT_REACTION_RATE_LIMIT = env.str("CHAT_REACTION_RATE_LIMIT", default="30/10s")  # reaction.add and .remove
# Distinct emoji on one message, and reactions of one user on one message.
CHAT_MAX_REACTIONS_PER_MESSAGE = env.int("CHAT_MAX_REACTIONS_PER_MESSAGE", default=40)
CHAT_MAX_REACTIONS_PER_USER = env.int("CHAT_MAX_REACTIONS_PER_USER", default=12)
# Attachments (docs/files.md): the largest file, the types accepted (as sniffed from the content),
# uploads per user (burst/window) and unsent uploads one user may hold (over the last 24 hours).
CHAT_MAX_UPLOAD_BYTES = env.int("CHAT_MAX_UPLOAD_BYTES", default=25 * 1024 * 1024)
CHAT_UPLOAD_TYPES = env.list("CHAT_UPLOAD_TYPES", default=[
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/zip",
])
CHAT_UPLOAD_RATE_LIMIT = env.str("CHAT_UPLOAD_RATE_LIMIT", default="10/60s")
CHAT_MAX_PENDING_UPLOADS = env.int("CHAT_MAX_PENDING_UPLOADS", default=20)
# Set (e.g. "/_protected/") to let nginx send files: downloads answer with an empty body and
# X-Accel-Redirect: <prefix><storage name>, for an `internal` location (docs/files.md).
CHAT_FILES_ACCEL_REDIRECT = env.str("CHAT_FILES_ACCEL_REDIRECT", default="")
# Uploads larger than this are spooled to a temporary file while the request is parsed, not held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)
# Where uploaded files are stored: the local filesystem (MEDIA_ROOT, shared by every web instance),
# or with CHAT_FILE_STORAGE=s3 an S3 bucket through django-storages (requirements-s3.txt), configured
# by its standard AWS_* variables. Files are always served through the app (chat/files.py), never
# from a public or signed storage URL.
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media"))
MEDIA_URL = "/media/"  # not routed: nothing is served from here
CHAT_FILE_STORAGE = env.str("CHAT_FILE_STORAGE", default="filesystem")
if CHAT_FILE_STORAGE == "s3":
    DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),
            "region_name": env.str("AWS_S3_REGION_NAME", default=None),
            "access_key": env.str("AWS_ACCESS_KEY_ID", default=None),
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default=None),
            "default_acl": None,  # the bucket's own (private); nothing is public
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
elif CHAT_FILE_STORAGE == "filesystem":
    DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
else:
    raise ImproperlyConfigured(f"CHAT_FILE_STORAGE must be 'filesystem' or 's3', not {CHAT_FILE_STORAGE!r}.")
STORAGES = {
    "default": DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Open sockets one user may hold across all instances; past it a new one closes with 4429.
CHAT_MAX_SOCKETS_PER_USER = env.int("CHAT_MAX_SOCKETS_PER_USER", default=20)
# Joins one web process works on at once (accepted, hello not sent yet); past it a new socket
# closes with 1013 and the reason `retry_after=<seconds>`: the time the joins under way need at the
# rate joins end, at least CHAT_JOIN_RETRY_SECONDS, jittered from half to one and a half times it,
# so a reconnect storm is spread out instead of timing out.
CHAT_MAX_PENDING_JOINS = env.int("CHAT_MAX_PENDING_JOINS", default=500)
CHAT_JOIN_RETRY_SECONDS = env.float("CHAT_JOIN_RETRY_SECONDS", default=2.0)
# Failed logins per account and per client address, and signups per address, in a window
# ('5/15m'; '0/1s' turns one off): past them the form answers 429 until the window ends.
CHAT_LOGIN_LIMIT = env.str("CHAT_LOGIN_LIMIT", default="5/15m")
CHAT_LOGIN_ADDRESS_LIMIT = env.str("CHAT_LOGIN_ADDRESS_LIMIT", default="30/15m")
CHAT_SIGNUP_LIMIT = env.str("CHAT_SIGNUP_LIMIT", default="10/1h")
# Password reset requests, counted per email address and per client address like logins.
CHAT_PASSWORD_RESET_LIMIT = env.str("CHAT_PASSWORD_RESET_LIMIT", default="3/1h")
CHAT_PASSWORD_RESET_ADDRESS_LIMIT = env.str("CHAT_PASSWORD_RESET_ADDRESS_LIMIT", default="10/1h")
# Proxies in front of the web instances that append to X-Forwarded-For (1 behind the bundled
# nginx): the client's address is the entry the outermost one added, never one the client wrote.
CHAT_TRUSTED_PROXIES = env.int("CHAT_TRUSTED_PROXIES", default=0)
# A deleted account's messages: "keep" (under a "deleted user" stand-in) or "remove" (erased).
CHAT_DELETED_USER_MESSAGES = env.str("CHAT_DELETED_USER_MESSAGES", default="keep")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# LOG_FORMAT=json: one JSON object a line (with request_id / conn_id), for log pipelines.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "chat.logcontext.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(conn_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"kafka": {"level": "WARNING"}},
}
CSRF_FAILURE_VIEW = "chat.api.csrf_failure"
