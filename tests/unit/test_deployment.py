"""No container engine runs here, so the deployment files are checked by parsing: the compose
stack, nginx, the Dockerfile and the Procfile must describe the same processes and settings."""

import re
import shlex

import yaml

from tests.support import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
NGINX = (ROOT / "docker" / "nginx.conf").read_text()
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
PROCFILE = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
SETTINGS_SOURCE = (ROOT / "config" / "settings" / "base.py").read_text()
WEB = sorted(name for name in SERVICES if name.startswith("web"))


def argv(command: str | list) -> list[str]:
    words = shlex.split(command) if isinstance(command, str) else list(command)
    return ["8000" if w == "${PORT:-8000}" else w for w in words]


def test_procfile_has_the_three_process_types():
    assert set(PROCFILE) == {"web", "worker", "release"}
    assert argv(PROCFILE["web"])[:1] == ["daphne"] and argv(PROCFILE["web"])[-1] == "config.asgi:application"
    assert argv(PROCFILE["worker"]) == ["python", "manage.py", "consume_messages"]
    assert argv(PROCFILE["release"])[:3] == ["python", "manage.py", "migrate"]


def test_compose_runs_the_procfile_processes():
    assert {"nginx", "postgres", "redis", "kafka", "migrate", "worker"} <= set(SERVICES)
    assert len(WEB) >= 2
    for name in WEB:
        assert argv(SERVICES[name]["command"]) == argv(PROCFILE["web"])
    assert argv(SERVICES["worker"]["command"]) == argv(PROCFILE["worker"])
    assert argv(SERVICES["migrate"]["command"]) == argv(PROCFILE["release"])
    assert SERVICES["migrate"]["restart"] == "no"
    for name in [*WEB, "worker"]:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_dockerfile_default_command_is_the_web_process():
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1)
    assert argv(yaml.safe_load(cmd)) == argv(PROCFILE["web"])
    assert "requirements.txt" in DOCKERFILE and "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE


def test_app_services_point_at_the_compose_services_and_use_known_settings():
    read_by_settings = set(re.findall(r'env\.(?:str|bool|int|list|db_url_config)\("([A-Z_]+)"', SETTINGS_SOURCE))
    for name in [*WEB, "worker", "migrate"]:
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"].endswith("@postgres:5432/chat")
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        unknown = set(env) - read_by_settings
        assert not unknown, f"{name} sets variables the settings never read: {unknown}"


def test_nginx_balances_every_web_service_with_websocket_upgrade():
    upstream = re.search(r"upstream chat_web \{(.*?)\}", NGINX, re.S).group(1)
    assert sorted(re.findall(r"server ([\w-]+):8000;", upstream)) == WEB
    assert "ip_hash" not in upstream and "sticky" not in upstream
    assert "proxy_set_header Upgrade $http_upgrade" in NGINX
    assert "proxy_set_header Connection $connection_upgrade" in NGINX
    nginx = SERVICES["nginx"]
    assert nginx["ports"] and any("nginx.conf" in volume for volume in nginx["volumes"])


def test_kafka_runs_in_kraft_mode_without_zookeeper():
    kafka = SERVICES["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not [name for name in SERVICES if "zookeeper" in name]
