"""The settings every Kafka client is built with (chat/bus/client.py) and the replication the app's
topics get (chat/bus/topics.replication), without a broker."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from chat.bus.client import client_kwargs
from chat.bus.topics import replication

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "chat", "KAFKA_SASL_PASSWORD": "secret", "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem"}


def test_plaintext_by_default():
    with override_settings(KAFKA_BOOTSTRAP_SERVERS=["a:9092", "b:9092"]):
        assert client_kwargs() == {"bootstrap_servers": ["a:9092", "b:9092"], "security_protocol": "PLAINTEXT",
                                   "reconnect_backoff_max_ms": 1_000}


def test_sasl_over_tls_with_a_ca_file():
    with override_settings(KAFKA_BOOTSTRAP_SERVERS=["a:9093"], **SASL):
        kwargs = client_kwargs()
    assert kwargs == {"bootstrap_servers": ["a:9093"], "security_protocol": "SASL_SSL",
                      "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "chat",
                      "sasl_plain_password": "secret", "ssl_cafile": "/etc/kafka/ca.pem",
                      "reconnect_backoff_max_ms": 1_000}
    # Producer, consumer and admin client all take every one of them.
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(kwargs) <= set(client.DEFAULT_CONFIG), client


@pytest.mark.parametrize(("overrides", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "needs KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "needs KAFKA_SASL_USERNAME"),
    ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "use SSL or SASL_SSL"),
])
def test_combinations_kafka_python_would_refuse_later_stop_at_once(overrides, message):
    with override_settings(**overrides), pytest.raises(ImproperlyConfigured, match=message):
        client_kwargs()


@pytest.mark.parametrize(("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (6, 3, 2)])
def test_the_default_replication_follows_the_broker_count(brokers, factor, min_insync):
    with override_settings(KAFKA_REPLICATION_FACTOR=None, KAFKA_MIN_INSYNC_REPLICAS=None):
        assert replication(brokers) == (factor, min_insync)


def test_configured_replication_wins_and_a_min_insync_above_it_is_refused():
    with override_settings(KAFKA_REPLICATION_FACTOR=5, KAFKA_MIN_INSYNC_REPLICAS=3):
        assert replication(3) == (5, 3)
    with override_settings(KAFKA_REPLICATION_FACTOR=2, KAFKA_MIN_INSYNC_REPLICAS=None):
        assert replication(3) == (2, 1)
    with override_settings(KAFKA_REPLICATION_FACTOR=2, KAFKA_MIN_INSYNC_REPLICAS=3), \
            pytest.raises(ImproperlyConfigured, match="between 1 and the replication factor"):
        replication(3)
