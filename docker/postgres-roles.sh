#!/bin/sh
# The chat's database and its three roles (docs/deployment.md, "Database roles"). The postgres image
# runs this once, as its superuser, when it initialises an empty volume (/docker-entrypoint-initdb.d/):
#   chat         owns the database and, through migrate, every table; not a superuser
#   chat_web     the web instances: rows only (the database_roles migration grants them)
#   chat_worker  the workers: rows, and SET session_replication_role for the batch write
# The passwords come from the postgres service's environment (compose.yaml).
set -e
: "${CHAT_OWNER_PASSWORD:?}" "${CHAT_WEB_PASSWORD:?}" "${CHAT_WORKER_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
     -v owner_password="$CHAT_OWNER_PASSWORD" -v web_password="$CHAT_WEB_PASSWORD" \
     -v worker_password="$CHAT_WORKER_PASSWORD" <<'SQL'
CREATE ROLE chat LOGIN PASSWORD :'owner_password';
CREATE ROLE chat_web LOGIN PASSWORD :'web_password';
CREATE ROLE chat_worker LOGIN PASSWORD :'worker_password';
CREATE DATABASE chat OWNER chat;
GRANT SET ON PARAMETER session_replication_role TO chat_worker;
SQL
