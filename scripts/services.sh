#!/usr/bin/env bash
# Makes Postgres (5432), Redis (6379) and Kafka (9092) answer on 127.0.0.1, installing them when
# absent: Postgres and Redis from Debian's packages, Apache Kafka 4 (KRaft, one node that is both
# broker and controller) from its jars on Maven Central. No Docker and no systemd needed; run as
# root. Idempotent, and quick (no apt, no mvn) when everything is already up.
#
#   scripts/services.sh up|start     [postgres|redis|kafka ...]  start (install first when missing)
#   scripts/services.sh down|stop    [postgres|redis|kafka ...]  stop (data is kept)
#   scripts/services.sh restart      [postgres|redis|kafka ...]
#   scripts/services.sh status       [postgres|redis|kafka ...]  exit 0 when all named are up
#   scripts/services.sh logs         [kafka|kafka-cluster|redis-shards ...]  where the logs are, and their last lines
#
# `kafka-cluster` (never started by default) is the three-node Kafka of contract §7 beside the single
# node: brokers on 127.0.0.1:9192-9194, controllers on 9195-9197 (scripts/kafka/cluster.sh).
# `redis-shards` (never started by default) is the three Redis shards of contract §7 beside the
# single Redis: primaries on 127.0.0.1:6380-6382, replicas on 6390-6392, Sentinels on 26380-26382
# watching masters shard0-shard2; `up` fails a moved master back to its primary (scripts/redis/shards.sh).
#
# Environment: CHAT_PG_FAST=1 turns off fsync, synchronous_commit and full_page_writes (tests only).
# State lives in one place per machine, not per checkout, so every clone (and CI's clean clone)
# finds, reuses and can stop the same broker: $CHAT_SERVICES_HOME, by default
# ~/.cache/chat-services (Kafka's jars, config, data and log; Redis's log). Postgres keeps
# Debian's cluster (/var/lib/postgresql, log in /var/log/postgresql), with the database `chat`, its
# owner `chat` (migrations) and the roles `chat_web` and `chat_worker` (docs/deployment.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CHAT_SERVICES_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-services}"
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_LOG4J="$ROOT/scripts/kafka/log4j2.xml"
KAFKA_HOME="$CACHE/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_LOG="$KAFKA_HOME/kafka.log"
KAFKA_PID="$KAFKA_HOME/kafka.pid"
KAFKA_PROPS="$KAFKA_HOME/server.properties"
KAFKA_JVM=(-Xms256m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$KAFKA_LOG4J")
REDIS_LOG="$CACHE/redis.log"
# The database's owner (runs migrations) and the roles web instances and workers log in as
# (docs/deployment.md, "Database roles"); local passwords: the roles' names.
PG_ROLE=chat PG_PASSWORD=chat PG_DB=chat PG_WEB_ROLE=chat_web PG_WORKER_ROLE=chat_worker
APT_UPDATED=""

say() { printf '%s\n' "$*"; }
fail() { printf 'services: %s\n' "$*" >&2; exit 1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || fail "apt-get install $* failed"
}

# A live process (a zombie, not yet reaped by PID 1, counts as gone).
alive() { local state; state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# --- Postgres ----------------------------------------------------------------------------------

# "<version> <name> <status>" of the cluster on port 5432 (Debian's package creates 15/main).
pg_cluster_line() { pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {print $1, $2, $4; exit}'; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
pg_log() { local v n s; read -r v n s <<<"$(pg_cluster_line)"; echo "/var/log/postgresql/postgresql-$v-$n.log"; }
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
pg_sql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -tAc "$1"; }
pg_login_ok() { PGPASSWORD=$2 psql -X -h 127.0.0.1 -p 5432 -U "$1" -d "$PG_DB" -tAc 'select 1' >/dev/null 2>&1; }
pg_chat_ok() { pg_login_ok "$PG_ROLE" "$PG_PASSWORD"; }
# Who may SET session_replication_role, "role:true|false" for each of the three: only the worker.
pg_roles_state() {
  pg_sql "SELECT string_agg(rolname || ':' || has_parameter_privilege(oid, 'session_replication_role', 'SET'), ' '
                            ORDER BY rolname)
          FROM pg_roles WHERE rolname IN ('$PG_ROLE', '$PG_WEB_ROLE', '$PG_WORKER_ROLE') AND rolcanlogin"
}
PG_ROLES_WANTED="$PG_ROLE:false $PG_WEB_ROLE:false $PG_WORKER_ROLE:true"

postgres_up() {
  if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    say "postgres: installing Debian's package..."
    apt_install postgresql
  fi
  if [ -z "$(pg_cluster_line)" ]; then
    local version
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster -p 5432 "$version" main >/dev/null || fail "postgres: could not create cluster $version/main"
  fi
  local version name status
  read -r version name status <<<"$(pg_cluster_line)"
  if [[ "$status" != online* ]]; then
    pg_ctlcluster "$version" "$name" start 9>&- || fail "postgres: failed to start; see $(pg_log)"
  fi
  wait_for 60 pg_ready || fail "postgres: not answering on 127.0.0.1:5432; see $(pg_log)"
  if ! pg_chat_ok; then
    pg_sql "DO \$\$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
                CREATE ROLE $PG_ROLE;
              END IF;
            END \$\$;
            ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';" >/dev/null \
      || fail "postgres: could not create role $PG_ROLE; see $(pg_log)"
    if [ "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
      as_postgres createdb -O "$PG_ROLE" "$PG_DB" || fail "postgres: could not create database $PG_DB; see $(pg_log)"
    fi
    pg_chat_ok || fail "postgres: password login as $PG_ROLE over 127.0.0.1 fails (pg_hba.conf?); see $(pg_log)"
  fi
  # Test runs drop their databases WITH (FORCE), which has to end an autovacuum worker busy there
  # too; without this a drop racing autovacuum fails with "must be a member of the role ...".
  if [ "$(pg_sql "SELECT pg_has_role('$PG_ROLE', 'pg_signal_backend', 'MEMBER')")" != "t" ]; then
    pg_sql "GRANT pg_signal_backend TO $PG_ROLE" >/dev/null \
      || fail "postgres: could not grant pg_signal_backend to $PG_ROLE; see $(pg_log)"
  fi
  # Web instances and workers log in as roles of their own; the owner's migrations give them the
  # rows of its tables (the database_roles migration). Only the worker may turn the per-row
  # foreign-key checks off, for a batch whose references it checked once (chat/storage.py).
  if [ "$(pg_roles_state)" != "$PG_ROLES_WANTED" ]; then
    pg_sql "DO \$\$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_WEB_ROLE') THEN
                CREATE ROLE $PG_WEB_ROLE;
              END IF;
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_WORKER_ROLE') THEN
                CREATE ROLE $PG_WORKER_ROLE;
              END IF;
            END \$\$;
            ALTER ROLE $PG_WEB_ROLE LOGIN PASSWORD '$PG_WEB_ROLE';
            ALTER ROLE $PG_WORKER_ROLE LOGIN PASSWORD '$PG_WORKER_ROLE';
            GRANT SET ON PARAMETER session_replication_role TO $PG_WORKER_ROLE;
            REVOKE SET ON PARAMETER session_replication_role FROM $PG_ROLE, $PG_WEB_ROLE;" >/dev/null \
      || fail "postgres: could not create roles $PG_WEB_ROLE and $PG_WORKER_ROLE; see $(pg_log)"
    [ "$(pg_roles_state)" = "$PG_ROLES_WANTED" ] \
      || fail "postgres: roles are '$(pg_roles_state)', not '$PG_ROLES_WANTED' (a superuser among them?)"
    pg_login_ok "$PG_WEB_ROLE" "$PG_WEB_ROLE" && pg_login_ok "$PG_WORKER_ROLE" "$PG_WORKER_ROLE" \
      || fail "postgres: password login as $PG_WEB_ROLE or $PG_WORKER_ROLE over 127.0.0.1 fails; see $(pg_log)"
  fi
  if [ "${CHAT_PG_FAST:-0}" = "1" ] && [ "$(pg_sql 'SHOW fsync')" != "off" ]; then
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET fsync = off" \
        -c "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET full_page_writes = off" \
        -c "SELECT pg_reload_conf()" >/dev/null \
      || fail "postgres: could not apply CHAT_PG_FAST settings; see $(pg_log)"
  fi
  say "postgres: up (postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:5432/$PG_DB; web: $PG_WEB_ROLE, worker: $PG_WORKER_ROLE)"
}

postgres_down() {
  local version name status
  read -r version name status <<<"$(pg_cluster_line)"
  if [[ "$status" == online* ]]; then
    pg_ctlcluster "$version" "$name" stop -m fast 9>&- || fail "postgres: failed to stop; see $(pg_log)"
  fi
  say "postgres: down"
}

postgres_status() { pg_ready; }

# --- Redis -------------------------------------------------------------------------------------

redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

redis_up() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    say "redis: installing Debian's package..."
    apt_install redis-server redis-tools
  fi
  # Debian's package may have started its own server on install (init script): any answer will do.
  if ! redis_ready; then
    port_open 6379 && fail "redis: 127.0.0.1:6379 is taken but does not answer PING"
    mkdir -p "$CACHE"
    # No persistence: tests and local runs want a clean, fast server (the chat survives Redis
    # losing its data by design).
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
      --dir "$CACHE" --logfile "$REDIS_LOG" --pidfile "$CACHE/redis.pid" 9>&- \
      || fail "redis: failed to start; see $REDIS_LOG"
    wait_for 20 redis_ready || fail "redis: not answering on 127.0.0.1:6379; see $REDIS_LOG"
  fi
  say "redis: up (redis://127.0.0.1:6379/0)"
}

redis_down() {
  if redis_ready; then
    redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
    wait_for 20 eval '! port_open 6379' || fail "redis: did not stop; see $REDIS_LOG"
  fi
  say "redis: down"
}

redis_status() { redis_ready; }

# --- Kafka -------------------------------------------------------------------------------------

# The broker's pid, from the pid file when that process is still our broker, else found by its
# command line (a lost pid file); nothing when no broker of ours runs.
kafka_pid() {
  local pid
  if [ -f "$KAFKA_PID" ]; then
    pid=$(cat "$KAFKA_PID")
    if [ -n "$pid" ] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $KAFKA_PROPS"; then
      echo "$pid"; return 0
    fi
  fi
  for pid in $(pgrep -f "kafka\.Kafka $KAFKA_PROPS" || true); do
    if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "java" ]; then
      echo "$pid" >"$KAFKA_PID"
      echo "$pid"; return 0
    fi
  done
  return 1
}
kafka_running() { kafka_pid >/dev/null; }
# Ready: our broker runs, its PLAINTEXT port accepts connections and it logged the end of startup
# (the log is truncated at each start).
kafka_ready() { kafka_running && port_open 9092 && grep -qF "Kafka Server started" "$KAFKA_LOG" 2>/dev/null; }

# The jars: fetched once per content of pom.xml (the marker holds its checksum).
kafka_fetch() {
  local want; want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  [ "$(cat "$KAFKA_LIBS/.complete" 2>/dev/null)" = "$want" ] && return 0
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  say "kafka: fetching the broker's jars from Maven Central (scripts/kafka/pom.xml)..."
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp" \
      -DincludeScope=runtime 9>&- >"$KAFKA_HOME/mvn.log" 2>&1 \
    || fail "kafka: mvn dependency:copy-dependencies failed; see $KAFKA_HOME/mvn.log"
  local slf4j; slf4j=$(find "$KAFKA_LIBS.tmp" -name 'slf4j-api-*.jar' -printf '%f\n')
  [[ "$slf4j" =~ ^slf4j-api-1\.7\.[0-9]+\.jar$ ]] \
    || fail "kafka: expected exactly one slf4j-api 1.7.x jar in $KAFKA_LIBS.tmp, found: ${slf4j:-none}"
  compgen -G "$KAFKA_LIBS.tmp/log4j-slf4j-impl-*.jar" >/dev/null \
    || fail "kafka: no SLF4J binding (log4j-slf4j-impl) in $KAFKA_LIBS.tmp"
  echo "$want" >"$KAFKA_LIBS.tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

kafka_config() {
  cat >"$KAFKA_PROPS" <<PROPS
# Generated by scripts/services.sh (rewritten at each start): one KRaft node that is both broker
# and controller, for tests and local runs.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
}

kafka_up() {
  mkdir -p "$KAFKA_HOME"
  if kafka_ready; then
    say "kafka: up (127.0.0.1:9092)"
    return 0
  fi
  local pid
  if ! pid=$(kafka_pid); then
    local port
    for port in 9092 9093; do
      port_open "$port" && fail "kafka: 127.0.0.1:$port is taken by another process (not $KAFKA_PROPS)"
    done
    kafka_fetch
    kafka_config
    if [ ! -f "$KAFKA_DATA/meta.properties" ]; then  # first start only: restarts keep the data
      local cluster_id
      cluster_id=$(java "${KAFKA_JVM[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
      [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || fail "kafka: StorageTool random-uuid gave '$cluster_id'"
      java "${KAFKA_JVM[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" \
          -c "$KAFKA_PROPS" --standalone >"$KAFKA_HOME/format.log" 2>&1 \
        || fail "kafka: formatting $KAFKA_DATA failed; see $KAFKA_HOME/format.log"
    fi
    # Own session (survives the caller's process group being killed), no inherited pipes or lock;
    # the pid file is written by the process that becomes the broker (exec).
    rm -f "$KAFKA_PID"
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
      java "${KAFKA_JVM[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
      </dev/null >"$KAFKA_LOG" 2>&1 9>&- &
    wait_for 5 test -s "$KAFKA_PID" || fail "kafka: failed to launch; see $KAFKA_LOG"
    pid=$(cat "$KAFKA_PID")
  fi
  local deadline=$((SECONDS + 90))
  until kafka_ready; do
    if ! alive "$pid"; then
      grep -m 1 -A 1 -E ' (ERROR|FATAL) ' "$KAFKA_LOG" >&2 || tail -n 5 "$KAFKA_LOG" >&2 || true
      fail "kafka: the broker exited during startup; see $KAFKA_LOG"
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "kafka: not ready on 127.0.0.1:9092 after 90 s; see $KAFKA_LOG"
    sleep 0.2
  done
  say "kafka: up (127.0.0.1:9092)"
}

kafka_down() {
  local pid
  if pid=$(kafka_pid); then
    kill "$pid" 2>/dev/null || true
    if ! wait_for 60 eval "! alive $pid"; then
      kill -9 "$pid" 2>/dev/null || true
      wait_for 10 eval "! alive $pid" || fail "kafka: pid $pid did not stop; see $KAFKA_LOG"
    fi
  fi
  rm -f "$KAFKA_PID"
  say "kafka: down"
}

kafka_status() { kafka_ready; }
kafka_logs() { say "== $KAFKA_LOG"; tail -n "${LINES_SHOWN:-20}" "$KAFKA_LOG" 2>/dev/null || true; }

# The three-node cluster (kafka-cluster): kafka_cluster_up, _down, _status, _logs.
# shellcheck source=kafka/cluster.sh
source "$ROOT/scripts/kafka/cluster.sh"

# The three Redis shards with replicas and Sentinels (redis-shards): redis_shards_up, _down, _status, _logs.
# shellcheck source=redis/shards.sh
source "$ROOT/scripts/redis/shards.sh"

# --- main --------------------------------------------------------------------------------------

usage="usage: scripts/services.sh up|down|restart|status|logs [postgres|redis|kafka|kafka-cluster|redis-shards ...]"
command=${1:-up}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(postgres redis kafka)
for name in "${names[@]}"; do
  case "$name" in postgres|redis|kafka|kafka-cluster|redis-shards) ;; *) fail "unknown service '$name'; $usage" ;; esac
done

# A service's functions are named after it, dashes as underscores (kafka-cluster -> kafka_cluster_up).
up() { local name; for name in "$@"; do "${name//-/_}_up"; done; }
down() { local i name; for ((i = $# ; i >= 1; i--)); do name=${!i}; "${name//-/_}_down"; done; }
lock() {  # one up/down at a time (fd 9 is closed in every process started from here)
  mkdir -p "$CACHE"
  exec 9>"$CACHE/services.lock"
  flock -w 300 9 || fail "another scripts/services.sh still runs after 300 s ($CACHE/services.lock)"
}

case "$command" in
  up|start) lock; up "${names[@]}" ;;
  down|stop) lock; down "${names[@]}" ;;
  restart) lock; down "${names[@]}"; up "${names[@]}" ;;
  status)
    all=0
    for name in "${names[@]}"; do
      if "${name//-/_}_status"; then say "$name: up"; else say "$name: down"; all=1; fi
    done
    exit $all ;;
  logs)
    for name in "${names[@]}"; do
      if declare -F "${name//-/_}_logs" >/dev/null; then "${name//-/_}_logs"; else say "$name: see the header of this script"; fi
    done ;;
  -h|--help|help) say "$usage" ;;
  *) fail "$usage" ;;
esac
