"""The alert rules and the dashboard (docker/prometheus/, docker/grafana/) watch what the app
exports: promtool checks the rules and the Prometheus config and runs the rules' own tests
(alerts.test.yml), and every metric a rule or a panel names exists in chat/metrics.py."""

import json
import re
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

import chat.metrics  # noqa: F401 - registers the app's metrics
from tests.support import ROOT
from tests.unit.test_deployment import SERVICES, WEB

PROMETHEUS = ROOT / "docker" / "prometheus"
GRAFANA = ROOT / "docker" / "grafana"
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
ALERTS = {rule["alert"]: rule for group in RULES["groups"] for rule in group["rules"]}
RULE_TESTS = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
DASHBOARD = json.loads((GRAFANA / "chat.json").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
SCRAPE = {job["job_name"]: job for job in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]}

# What an operator must hear about, and the metric that tells it.
WATCHED = {
    "consumer lag": "chat_worker_lag",
    "not_persisted": "chat_errors_sent_total",
    "dead-lettered records": "chat_worker_dead_lettered_total",
    "4408 cuts": "chat_slow_consumer_cuts_total",
    "a Redis shard unreachable": "chat_dependency_up",
    "a broker unreachable": "chat_kafka_broker_reachable",
    "replicas under min.insync": "chat_kafka_partitions_under_min_isr",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    """scripts/promtool.sh (Debian's promtool, fetched on first use; `make promtool` does it beforehand)."""
    return subprocess.run([str(ROOT / "scripts" / "promtool.sh"), *args], cwd=PROMETHEUS, capture_output=True,
                          text=True, timeout=300, check=False)


def exported() -> set[str]:
    """Every series name the app's metrics produce."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("chat_"):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            names |= {family.name + suffix for suffix in suffixes}
    return names


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bchat_[a-z0-9_]+", expr))


def test_promtool_accepts_the_rules_and_the_prometheus_config():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_in_the_rules_own_tests():
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    fired = {case["alertname"] for test in RULE_TESTS["tests"] for case in test["alert_rule_test"]
             if case["exp_alerts"]}
    assert fired == set(ALERTS)


@pytest.mark.parametrize("concern", WATCHED)
def test_an_alert_watches(concern):
    assert [name for name, rule in ALERTS.items() if WATCHED[concern] in metrics_in(rule["expr"])], concern


def test_alerts_name_only_metrics_the_app_exports_and_say_how_bad_and_what():
    names = exported()
    for name, rule in ALERTS.items():
        assert metrics_in(rule["expr"]) <= names, (name, metrics_in(rule["expr"]) - names)
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_dashboard_shows_only_exported_metrics_and_every_one_an_alert_watches():
    names = exported()
    shown = set()
    for panel in PANELS:
        for target in panel["targets"]:
            assert metrics_in(target["expr"]) <= names, (panel["title"], metrics_in(target["expr"]) - names)
            shown |= metrics_in(target["expr"])
    watched = set().union(*(metrics_in(rule["expr"]) for rule in ALERTS.values()))
    assert watched <= shown, watched - shown


def test_the_dashboard_is_well_formed_for_the_provisioned_datasource():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (uid,) = [source["uid"] for source in datasource["datasources"]]
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        assert all(target["datasource"]["uid"] == uid for target in panel["targets"]), panel["title"]


def test_prometheus_scrapes_every_web_instance_and_the_workers_metrics_port():
    (web,) = SCRAPE["chat-web"]["static_configs"]
    assert sorted(web["targets"]) == [f"{name}:8000" for name in WEB]
    (workers,) = SCRAPE["chat-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert str(workers["port"]) == str(SERVICES["worker"]["environment"]["WORKER_METRICS_PORT"])
    # ChatWorkersDown looks for this job's targets.
    assert 'job="chat-worker"' in ALERTS["ChatWorkersDown"]["expr"]


@pytest.mark.filterwarnings("ignore:No directory at")  # whitenoise: static files are not collected here
async def test_each_readiness_check_sets_its_dependency_up_gauge():
    from django.test import AsyncClient, override_settings

    with override_settings(ALLOWED_HOSTS=["testserver"]):
        response = await AsyncClient().get("/readyz")
    assert response.status_code == 200, (response.status_code, response.content[:300])
    checks = response.json()["checks"]
    assert {"database", "redis", "kafka"} <= set(checks)
    for dependency, result in checks.items():
        value = REGISTRY.get_sample_value("chat_dependency_up", {"dependency": dependency})
        assert value == (1.0 if result == "ok" else 0.0), (dependency, result)
