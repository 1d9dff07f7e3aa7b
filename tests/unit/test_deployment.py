"""The deployment files describe the same processes and settings as the code.

No container engine runs here, so the Procfile, docker/Dockerfile, docker/compose.yaml and
docker/nginx.conf are parsed and checked against each other and against config/settings/base.py.
Nothing here needs Django settings, a database or a network.
"""

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"

COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
WEB = sorted(name for name in SERVICES if re.fullmatch(r"web(-\d+)?", name))
APP = [*WEB, "worker", "migrate"]
KAFKA = sorted(name for name in SERVICES if re.fullmatch(r"kafka-\d+", name))
NGINX = (DOCKER / "nginx.conf").read_text()
POSTGRES_ROLES = (DOCKER / "postgres-roles.sh").read_text()
# Continuation lines joined, so each instruction is one line.
DOCKERFILE = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
PROCFILE_LINES = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
PROCFILE = dict(line.split(":", 1) for line in PROCFILE_LINES)
SETTINGS_SOURCE = (ROOT / "config" / "settings" / "base.py").read_text()
# Every variable the settings read: env("NAME", ...), env.str("NAME", ...), env.bool(...), ...
SETTINGS_VARS = set(re.findall(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']", SETTINGS_SOURCE))


def argv(command: str | list[str]) -> list[str]:
    """A command as its words, with `${PORT:-8000}` read as its default."""
    words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
    return [re.sub(r"\$\{PORT:-(\d+)\}", r"\1", word) for word in words]


def published_ports(service: dict) -> list[tuple[int | None, int]]:
    """(host, container) port pairs of a service's short-syntax `ports` ("8080:80", "80")."""
    pairs = []
    for entry in service.get("ports", []):
        *host, container = str(entry).split(":")
        pairs.append((int(host[-1]) if host else None, int(container.split("/")[0])))
    return pairs


# --- Procfile ------------------------------------------------------------------------------------


def test_procfile_has_exactly_web_worker_and_release():
    assert [line.split(":", 1)[0] for line in PROCFILE_LINES] == ["web", "worker", "release"]
    assert argv(PROCFILE["web"]) == ["daphne", "-b", "0.0.0.0", "-p", "8000", "config.asgi:application"]
    assert argv(PROCFILE["worker"]) == ["python", "manage.py", "consume_messages"]
    assert argv(PROCFILE["release"]) == ["python", "manage.py", "migrate", "--noinput"]


# --- compose: the processes ---------------------------------------------------------------------


def test_every_uvicorn_command_the_docs_give_listens_with_a_storms_backlog():
    """uvicorn's default backlog (2048) overflows when one instance's sockets move to another
    (docs/deployment.md); daphne gets 4096 from config/daphne_listen.py whatever its command."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    commands = [match for path in docs
                for match in re.findall(r"uvicorn [^`\n]*?(?:\\\n[^`\n]*?)*config\.asgi:application",
                                        path.read_text())]
    assert commands, "no uvicorn command in the docs"
    for command in commands:
        words = argv(command.replace("\\\n", " "))
        assert words[words.index("--backlog") + 1] == "4096", command


def test_compose_has_every_part_of_the_deployment():
    assert {"nginx", "postgres", "redis", "migrate", "worker"} <= set(SERVICES)
    assert len(KAFKA) == 3, "three Kafka nodes: one may be lost without losing an acked message"
    assert len(WEB) >= 2, "the point of the stack is more than one web instance behind nginx"


def test_compose_runs_the_procfile_commands():
    for name in WEB:
        assert argv(SERVICES[name]["command"]) == argv(PROCFILE["web"]), name
    assert argv(SERVICES["worker"]["command"]) == argv(PROCFILE["worker"])
    assert argv(SERVICES["migrate"]["command"]) == argv(PROCFILE["release"])


def test_migrate_runs_once_before_web_and_worker():
    migrate = SERVICES["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in [*WEB, "worker"]:
        condition = SERVICES[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_app_services_share_one_image():
    images = {SERVICES[name].get("image") for name in APP}
    builds = {json.dumps(SERVICES[name].get("build"), sort_keys=True) for name in APP}
    assert len(images) == 1 and len(builds) == 1
    assert SERVICES["web-1"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / SERVICES["web-1"]["build"]["context"] / "manage.py").is_file()


def test_web_instances_share_one_uploads_volume_the_image_prepares():
    """A file uploaded through one instance is served by any other (docs/files.md)."""
    media = SERVICES["web-1"]["environment"]["MEDIA_ROOT"]
    for name in WEB:
        assert SERVICES[name]["environment"]["MEDIA_ROOT"] == media, name
        assert f"media:{media}" in SERVICES[name]["volumes"], name
    assert "media" in COMPOSE["volumes"]
    assert f"chown chat:chat {media}" in (DOCKER / "Dockerfile").read_text()


def test_only_web_services_keep_the_images_http_healthcheck():
    for name in ["worker", "migrate"]:
        assert SERVICES[name]["healthcheck"] == {"disable": True}, name
    for name in WEB:
        assert "healthcheck" not in SERVICES[name], name


# --- compose: configuration ---------------------------------------------------------------------


def test_settings_variables_are_found():
    # Guards the pattern, so a failure in the next test names a stray variable, not a broken regex.
    expected = {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "SECRET_KEY", "DEBUG"}
    assert expected <= SETTINGS_VARS


def test_app_services_set_only_variables_the_settings_read():
    for name in APP:
        unknown = set(SERVICES[name]["environment"]) - SETTINGS_VARS
        assert not unknown, f"{name} sets variables config/settings/base.py never reads: {sorted(unknown)}"


def test_app_services_share_one_environment_but_the_database_role():
    def shared(name: str) -> dict:
        return {key: value for key, value in SERVICES[name]["environment"].items() if key != "DATABASE_URL"}

    for name in APP[1:]:
        assert shared(name) == shared(APP[0]), name


def test_app_services_point_at_the_compose_services():
    (database_name,) = re.findall(r"^CREATE DATABASE (\w+) OWNER \w+;$", POSTGRES_ROLES, re.MULTILINE)
    for name in APP:
        env = SERVICES[name]["environment"]
        database = urlsplit(env["DATABASE_URL"])
        assert database.scheme in {"postgres", "postgresql"}
        assert (database.hostname, database.port) == ("postgres", 5432)
        assert database.path == "/" + database_name
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
        assert env["KAFKA_BOOTSTRAP_SERVERS"].split(",") == [f"{node}:9092" for node in KAFKA]


def postgres_roles() -> dict[str, str]:
    """The login roles docker/postgres-roles.sh creates, with the passwords the postgres service gives it."""
    variables = dict(re.findall(r"-v (\w+)=\"\$(\w+)\"", POSTGRES_ROLES))
    postgres = SERVICES["postgres"]["environment"]
    return {role: str(postgres[variables[variable]])
            for role, variable in re.findall(r"^CREATE ROLE (\w+) LOGIN PASSWORD :'(\w+)';$", POSTGRES_ROLES,
                                             re.MULTILINE)}


def test_web_worker_and_migrate_log_in_as_roles_of_their_own():
    roles = postgres_roles()
    (owner,) = re.findall(r"^CREATE DATABASE \w+ OWNER (\w+);$", POSTGRES_ROLES, re.MULTILINE)
    logins = {name: urlsplit(SERVICES[name]["environment"]["DATABASE_URL"]) for name in APP}
    for name, url in logins.items():
        assert roles.get(url.username) == url.password, f"{name} logs in as a role the init script does not create"
    web = {logins[name].username for name in WEB}
    assert len(web) == 1, "every web instance logs in as the same role"
    assert logins["migrate"].username == owner
    assert len({*web, logins["worker"].username, owner}) == 3
    assert owner != SERVICES["postgres"]["environment"]["POSTGRES_USER"], "the owner is not the superuser"
    # Only the worker may turn the per-row foreign-key checks off for its batch (chat/storage.py).
    granted = re.findall(r"^GRANT SET ON PARAMETER session_replication_role TO (\w+);$", POSTGRES_ROLES, re.MULTILINE)
    assert granted == [logins["worker"].username]
    assert not re.search(r"SUPERUSER|CREATEROLE|CREATEDB|^GRANT (?!SET ON PARAMETER)", POSTGRES_ROLES, re.MULTILINE)


def test_postgres_runs_the_roles_script_when_its_volume_is_created():
    mounts = [str(volume).split(":") for volume in SERVICES["postgres"]["volumes"]]
    assert any((DOCKER / source).resolve() == DOCKER / "postgres-roles.sh"
               and target.startswith("/docker-entrypoint-initdb.d/") and target.endswith(".sh")
               for source, target, *_ in mounts)
    assert (DOCKER / "postgres-roles.sh").stat().st_mode & 0o111, "the image sources a script it cannot execute"


def test_secret_key_comes_from_the_operator():
    for name in APP:
        env = SERVICES[name]["environment"]
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "compose refuses to start without SECRET_KEY"
        assert str(env["DEBUG"]).lower() == "false"


def test_trusted_origins_and_hosts_match_what_nginx_publishes():
    env = SERVICES["web-1"]["environment"]
    hosts = env["ALLOWED_HOSTS"].split(",")
    host_ports = {host for host, _ in published_ports(SERVICES["nginx"])}
    for origin in env["CSRF_TRUSTED_ORIGINS"].split(","):
        parts = urlsplit(origin)
        assert parts.port in host_ports and parts.hostname in hosts, origin
    assert "127.0.0.1" in hosts, "the image's healthcheck sends Host: 127.0.0.1"


# --- Kafka ---------------------------------------------------------------------------------------


def test_kafka_is_three_combined_kraft_nodes_of_one_cluster_without_zookeeper():
    envs = [SERVICES[node]["environment"] for node in KAFKA]
    assert [env["KAFKA_NODE_ID"] for env in envs] == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    voters = {f"{env['KAFKA_NODE_ID']}@{node}:9093" for node, env in zip(KAFKA, envs, strict=True)}
    for env in envs:
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
        assert not [key for key in env if "ZOOKEEPER" in key]
    assert not [name for name in SERVICES if "zookeeper" in name]


def test_kafka_replicates_internal_and_auto_created_topics_and_never_elects_a_lagging_replica():
    for node in KAFKA:
        env = SERVICES[node]["environment"]
        factors = {key: value for key, value in env.items() if key.endswith("REPLICATION_FACTOR")}
        min_isr = {key: value for key, value in env.items() if key.endswith(("MIN_ISR", "MIN_INSYNC_REPLICAS"))}
        assert set(factors.values()) == {3} and len(factors) == 4, factors
        assert set(min_isr.values()) == {2} and len(min_isr) == 3, min_isr
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]).lower() == "false"


def test_each_kafka_node_advertises_the_address_the_app_bootstraps_from():
    bootstrap = SERVICES["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert [SERVICES[node]["environment"]["KAFKA_ADVERTISED_LISTENERS"] for node in KAFKA] == [
        f"PLAINTEXT://{address}" for address in bootstrap]


def test_app_services_wait_for_every_kafka_node():
    for name in [*WEB, "worker"]:
        assert {node: SERVICES[name]["depends_on"][node]["condition"] for node in KAFKA} == dict.fromkeys(
            KAFKA, "service_healthy"), name


def test_kafka_auto_created_topics_get_the_apps_partition_count():
    app = SERVICES["worker"]["environment"]
    for node in KAFKA:
        assert str(SERVICES[node]["environment"]["KAFKA_NUM_PARTITIONS"]) == str(app["KAFKA_TOPIC_PARTITIONS"])


def test_each_kafka_node_keeps_its_log_in_a_volume_of_its_own():
    sources = []
    for node in KAFKA:
        mounts = [str(volume).split(":") for volume in SERVICES[node]["volumes"]]
        assert SERVICES[node]["environment"]["KAFKA_LOG_DIRS"] in {target for _, target, *_ in mounts}
        sources += [source for source, *_ in mounts]
    assert len(set(sources)) == len(KAFKA) and set(sources) <= set(COMPOSE["volumes"])


# --- monitoring ----------------------------------------------------------------------------------


def test_monitoring_is_an_opt_in_profile_wired_to_the_repositorys_rules_and_dashboard():
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["profiles"] == ["monitoring"], name
    mounted = {source for name in ("prometheus", "grafana") for source, *_ in
               (str(volume).split(":") for volume in SERVICES[name]["volumes"])}
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml", "./grafana/chat.json"} <= mounted
    for source in mounted:
        assert (DOCKER / source).exists(), source
    # Prometheus scrapes each web instance by its service name, so Django must accept that Host.
    hosts = SERVICES["web-1"]["environment"]["ALLOWED_HOSTS"].split(",")
    assert set(WEB) <= set(hosts)
    assert SERVICES["worker"]["environment"]["WORKER_METRICS_ADDR"] == "0.0.0.0"


# --- Redis shards (contract §7) -----------------------------------------------------------------

SHARDS = [f"redis-shard{n}" for n in range(3)]
SENTINELS = [f"redis-sentinel-{n}" for n in range(1, 4)]
SENTINEL_CONF = (DOCKER / "redis-sentinel.conf").read_text()


def test_redis_shards_are_an_opt_in_profile_of_three_primaries_with_a_replica_each():
    profiled = {name for name, service in SERVICES.items() if service.get("profiles") == ["redis-shards"]}
    assert profiled == {*SHARDS, *(f"{name}-replica" for name in SHARDS), *SENTINELS}
    for primary in SHARDS:
        replica = f"{primary}-replica"
        words = {name: argv(SERVICES[name]["command"]) for name in (primary, replica)}
        assert "--replicaof" not in words[primary]
        at = words[replica].index("--replicaof")
        assert words[replica][at + 1:at + 3] == [primary, "6379"]
        assert SERVICES[replica]["depends_on"][primary]["condition"] == "service_healthy"
        for name, command in words.items():
            # No persistence, as for `redis`; announced by name, so Sentinel names a promoted one by it.
            assert command[:5] == ["redis-server", "--save", "", "--appendonly", "no"], name
            assert command[command.index("--replica-announce-ip") + 1] == name
    for name in [*APP, "nginx"]:
        assert not profiled & set(SERVICES[name].get("depends_on", {})), f"{name} needs the opt-in profile"


def test_every_sentinel_watches_the_three_primaries_as_shard0_to_shard2():
    monitors = re.findall(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", SENTINEL_CONF, re.MULTILINE)
    assert monitors == [(f"shard{n}", SHARDS[n], "6379", "2") for n in range(3)]  # two of three agree
    assert re.search(r"^sentinel resolve-hostnames yes$", SENTINEL_CONF, re.MULTILINE)
    for name in SENTINELS:
        sentinel = SERVICES[name]
        (script,) = argv(sentinel["command"])[2:]
        assert argv(sentinel["command"])[:2] == ["sh", "-c"] and script.endswith("--sentinel")
        assert "./redis-sentinel.conf:/etc/redis/sentinel.conf:ro" in sentinel["volumes"]
        assert {primary: sentinel["depends_on"][primary]["condition"] for primary in SHARDS} == dict.fromkeys(
            SHARDS, "service_healthy")


# --- nginx ---------------------------------------------------------------------------------------


def test_nginx_service_publishes_a_port_and_mounts_the_config():
    nginx = SERVICES["nginx"]
    assert published_ports(nginx) and all(container == 80 for _, container in published_ports(nginx))
    mounts = [str(volume).split(":") for volume in nginx["volumes"]]
    assert any((DOCKER / source).resolve() == DOCKER / "nginx.conf" for source, *_ in mounts)
    assert set(WEB) <= set(nginx["depends_on"])


def test_nginx_round_robins_over_every_web_service():
    upstream = re.search(r"upstream chat_web \{(.*?)\}", NGINX, re.DOTALL).group(1)
    assert sorted(re.findall(r"server ([\w.-]+):8000;", upstream)) == WEB
    lines = [line.strip() for line in upstream.splitlines()]
    directives = {line.split()[0] for line in lines if line and not line.startswith("#")}
    assert directives == {"server"}, "round robin: no ip_hash, hash, sticky or least_conn"
    proxy_passes = re.findall(r"proxy_pass (\S+);", NGINX)
    assert proxy_passes and set(proxy_passes) == {"http://chat_web"}


def test_nginx_upgrades_websockets():
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{", NGINX)
    assert "proxy_http_version 1.1;" in NGINX
    assert "proxy_set_header Upgrade $http_upgrade;" in NGINX
    assert "proxy_set_header Connection $connection_upgrade;" in NGINX
    assert "proxy_set_header Host $host;" in NGINX
    websocket = re.search(r"location /ws/ \{(.*?)\}", NGINX, re.DOTALL).group(1)
    assert int(re.search(r"proxy_read_timeout (\d+)s;", websocket).group(1)) >= 600


def test_nginx_keeps_metrics_from_the_public():
    # /metrics and anything under it end at nginx; Prometheus scrapes web-N:8000 directly.
    for location in ("= /metrics", "/metrics/"):
        found = re.search(rf"location {re.escape(location)} \{{(.*?)\}}", NGINX, re.DOTALL)
        assert found, f"no 'location {location}' in docker/nginx.conf"
        assert re.fullmatch(r"\s*return 40[34];\s*", found.group(1)), found.group(1)


# --- Dockerfile ----------------------------------------------------------------------------------


def instructions(keyword: str) -> list[str]:
    return re.findall(rf"^{keyword}\s+(.*)$", DOCKERFILE, re.MULTILINE)


def test_dockerfile_default_command_is_the_procfile_web_line():
    (cmd,) = instructions("CMD")
    assert argv(json.loads(cmd)) == argv(PROCFILE["web"])
    assert instructions("EXPOSE") == ["8000"]


def test_dockerfile_builds_an_unprivileged_image_of_the_app():
    assert instructions("FROM") == ["python:3.11-slim"]
    assert any("pip install --no-cache-dir -r requirements.txt" in run for run in instructions("RUN"))
    (user,) = instructions("USER")
    assert user not in {"root", "0"}
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck and "curl" not in healthcheck


def test_dockerfile_copies_manage_py_config_templates_and_every_local_app():
    copied = {words.split()[0] for words in instructions("COPY")}
    installed = re.search(r"INSTALLED_APPS = \[(.*?)\]", SETTINGS_SOURCE, re.DOTALL).group(1)
    packages = {app.split(".")[0] for app in re.findall(r"\"([\w.]+)\"", installed)}
    local_apps = {package for package in packages if (ROOT / package).is_dir()}
    assert local_apps and local_apps | {"manage.py", "config", "templates", "requirements.txt"} <= copied


def test_dockerfile_sets_build_only_settings_for_collectstatic_alone():
    for line in DOCKERFILE.splitlines():
        if "SECRET_KEY" in line and not line.lstrip().startswith("#"):
            assert line.startswith("RUN ") and "collectstatic" in line, line
    assert not [env for env in instructions("ENV") if "SECRET_KEY" in env or "DEBUG" in env]
