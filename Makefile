# The two commands: `make run` (the whole chat on one process, embedded default) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000

.PHONY: run test test-fast test-faults services services-down services-status venv lint bench bench-fanout bench-rooms browser nginx clean stack stack-scaled stack-down promtool kafka-cluster kafka-cluster-down

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) manage.py migrate --noinput
	@echo ""
	@echo "  Chat running at http://127.0.0.1:$(PORT)/  (sign up at http://127.0.0.1:$(PORT)/accounts/signup/)"
	@echo ""
	$(PY) -m daphne -b 127.0.0.1 -p $(PORT) config.asgi:application

# Test processes for what runs side by side: each has its own database, Kafka topics, Redis key prefix
# and servers. The fault scenarios stop, restart or empty the services every test shares, so they
# run afterwards in one process; `make test` fails if either part does.
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist loadfile

test: venv services browser nginx promtool lint
	$(PY) -m pytest $(PARALLEL) -m "not faults"; shared=$$?; \
	$(PY) -m pytest -m faults; faults=$$?; \
	echo "make test: everything but the faults exited $$shared, the fault scenarios $$faults"; \
	[ $$shared -eq 0 ] && [ $$faults -eq 0 ]

test-fast: venv services
	$(PY) -m pytest $(PARALLEL) -m "not faults and not browser"

test-faults: venv services
	$(PY) -m pytest -m faults

services:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

# The three-node Kafka of contract §7 (brokers 127.0.0.1:9192-9194) beside the single node; the fault
# tests that need it start and stop it themselves. `make stack` uses it with
# KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194.
kafka-cluster:
	scripts/services.sh up kafka-cluster

kafka-cluster-down:
	scripts/services.sh down kafka-cluster

# promtool (from Debian's prometheus package) for the alert rules' tests (tests/unit/test_monitoring.py).
promtool:
	scripts/promtool.sh --version >/dev/null

browser:
	scripts/browser.sh

# nginx for the test of `make stack` (the deployment behind a load balancer).
nginx:
	scripts/stack.sh install

# Every benchmark scenario in sequence (fan-out, idle connections, persistence, many rooms over Redis
# shards, the send path's identity check): prints the tables,
# writes results/*.json and *.png (`$(PY) -m bench.all --quick` for a short run).
bench: venv services
	$(PY) -m bench.all

# Fan-out benchmark alone (daphne and uvicorn side by side): results/fanout.{json,png}.
# Every step also races two seed-stack servers (../shared/peers/seed-stack; npm installs them into .cache/seed-stack).
bench-fanout: venv services
	$(PY) -m bench.fanout

# Many rooms over three Redis shards against the one Redis, interleaved (starts redis-shards itself):
# results/rooms.{json,png}; then the send script's identity check alone: results/sendpath.json.
bench-rooms: venv services
	$(PY) -m bench.rooms
	$(PY) -m bench.sendpath

# The full local deployment without Docker: services, two daphne instances behind nginx, two workers.
stack: venv
	scripts/stack.sh up

# The same on the three Redis shards (Sentinel) and the three-node Kafka of contract §7.
stack-scaled: venv
	STACK_REDIS=shards STACK_KAFKA=cluster scripts/stack.sh up

stack-down:
	scripts/stack.sh down

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .cache test-artifacts db.sqlite3
