#!/usr/bin/env bash
# Makes Postgres (5432), Redis (6379) and Kafka (9092) answer on 127.0.0.1, installing them when
# absent: Postgres and Redis from Debian's packages, Apache Kafka 4 (KRaft, one node that is both
# broker and controller) from its jars on Maven Central. Idempotent and quick when all are up.
#
#   scripts/services.sh up     [postgres|redis|kafka ...]   start (install first when missing)
#   scripts/services.sh down   [postgres|redis|kafka ...]   stop (data is kept)
#   scripts/services.sh status [postgres|redis|kafka ...]   exit 0 when all named are up
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
KAFKA_HOME="$CACHE/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_LOG="$KAFKA_HOME/kafka.log"
KAFKA_PID="$KAFKA_HOME/kafka.pid"
KAFKA_PROPS="$KAFKA_HOME/server.properties"
REDIS_LOG="$CACHE/redis.log"
PG_ROLE=chat PG_PASSWORD=chat PG_DB=chat
APT_UPDATED=""

say() { printf '%s\n' "$*"; }
fail() { printf 'services: %s\n' "$*" >&2; exit 1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq || fail "apt-get update failed"
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || fail "apt-get install $* failed"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# --- Postgres ----------------------------------------------------------------------------------

pg_cluster() { pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}'; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
pg_log() { local c; c=$(pg_cluster); echo "/var/log/postgresql/postgresql-${c// /-}.log"; }
as_postgres() { runuser -u postgres -- "$@"; }

postgres_up() {
  if ! command -v pg_ctlcluster >/dev/null || ! dpkg -s postgresql >/dev/null 2>&1; then
    say "postgres: installing Debian's package..."
    apt_install postgresql
  fi
  if [ -z "$(pg_cluster)" ]; then
    local version
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster "$version" main >/dev/null || fail "postgres: could not create a cluster"
  fi
  if ! pg_ready; then
    local cluster; cluster=$(pg_cluster)
    # shellcheck disable=SC2086
    pg_ctlcluster $cluster start || fail "postgres: failed to start; see $(pg_log)"
    wait_for 30 postgres pg_ready || fail "postgres: not answering on 127.0.0.1:5432; see $(pg_log)"
  fi
  if [ "$(as_postgres psql -tAc "SELECT 1 FROM pg_roles WHERE rolname='$PG_ROLE'")" != "1" ]; then
    as_postgres psql -q -c "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" \
      || fail "postgres: could not create role $PG_ROLE; see $(pg_log)"
  fi
  if [ "$(as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != "1" ]; then
    as_postgres createdb -O "$PG_ROLE" "$PG_DB" || fail "postgres: could not create database $PG_DB"
  fi
  say "postgres: up (postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:5432/$PG_DB)"
}

postgres_down() {
  if [ -n "$(pg_cluster)" ] && pg_ready; then
    local cluster; cluster=$(pg_cluster)
    # shellcheck disable=SC2086
    pg_ctlcluster $cluster stop -m fast || fail "postgres: failed to stop; see $(pg_log)"
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
  if ! redis_ready; then
    mkdir -p "$CACHE"
    # No persistence: tests and local runs want a clean, fast server (the chat survives Redis
    # losing its data by design).
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
      --dir "$CACHE" --logfile "$REDIS_LOG" --pidfile "$CACHE/redis.pid" \
      || fail "redis: failed to start; see $REDIS_LOG"
    wait_for 20 redis redis_ready || fail "redis: not answering on 127.0.0.1:6379; see $REDIS_LOG"
  fi
  say "redis: up (redis://127.0.0.1:6379/0)"
}

redis_down() {
  if redis_ready; then
    redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
    wait_for 20 redis bash -c '! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null' || fail "redis: did not stop"
  fi
  say "redis: down"
}

redis_status() { redis_ready; }

# --- Kafka -------------------------------------------------------------------------------------

kafka_running() { [ -f "$KAFKA_PID" ] && kill -0 "$(cat "$KAFKA_PID")" 2>/dev/null; }
kafka_ready() { kafka_running && port_open 9092 && grep -q "Kafka Server started" "$KAFKA_LOG" 2>/dev/null; }

kafka_fetch() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  say "kafka: fetching the broker's jars from Maven Central..."
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS" \
    || fail "kafka: mvn dependency:copy-dependencies failed (scripts/kafka/pom.xml)"
  local slf4j; slf4j=$(ls "$KAFKA_LIBS" | grep -c '^slf4j-api-' || true)
  [ "$slf4j" = "1" ] && ls "$KAFKA_LIBS" | grep -q '^slf4j-api-1\.7\.' \
    || fail "kafka: expected exactly one slf4j-api 1.7.x jar in $KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
}

kafka_config() {
  cat > "$KAFKA_PROPS" <<PROPS
# Generated by scripts/services.sh: one KRaft node that is both broker and controller.
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
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
}

kafka_java() {  # kafka_java MAIN_CLASS ARGS...
  java -Xms256m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.xml" -cp "$KAFKA_LIBS/*" "$@"
}

kafka_up() {
  mkdir -p "$KAFKA_HOME"
  if kafka_ready; then
    say "kafka: up (127.0.0.1:9092)"
    return 0
  fi
  kafka_fetch
  kafka_config
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" --standalone \
      >>"$KAFKA_LOG" 2>&1 || fail "kafka: formatting storage failed; see $KAFKA_LOG"
  fi
  if ! kafka_running; then
    : > "$KAFKA_LOG.start"
    nohup java -Xms256m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.xml" -cp "$KAFKA_LIBS/*" \
      kafka.Kafka "$KAFKA_PROPS" >"$KAFKA_LOG" 2>&1 < /dev/null &
    echo $! > "$KAFKA_PID"
  fi
  wait_for 90 kafka kafka_ready || fail "kafka: not answering on 127.0.0.1:9092 after 90 s; see $KAFKA_LOG"
  say "kafka: up (127.0.0.1:9092)"
}

kafka_down() {
  if kafka_running; then
    local pid; pid=$(cat "$KAFKA_PID")
    kill "$pid" 2>/dev/null || true
    wait_for 60 kafka bash -c "! kill -0 $pid 2>/dev/null" || { kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$KAFKA_PID"
  say "kafka: down"
}

kafka_status() { kafka_ready; }

# --- main --------------------------------------------------------------------------------------

command=${1:-up}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(postgres redis kafka)
for name in "${names[@]}"; do
  case "$name" in postgres|redis|kafka) ;; *) fail "unknown service '$name' (postgres, redis or kafka)";; esac
done

case "$command" in
  up)   for name in "${names[@]}"; do "${name}_up"; done ;;
  down) for ((i=${#names[@]}-1; i>=0; i--)); do "${names[$i]}_down"; done ;;
  status)
    all=0
    for name in "${names[@]}"; do
      if "${name}_status"; then say "$name: up"; else say "$name: down"; all=1; fi
    done
    exit $all ;;
  *) fail "usage: scripts/services.sh up|down|status [postgres|redis|kafka ...]" ;;
esac
