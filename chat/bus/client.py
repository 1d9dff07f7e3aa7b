"""What every Kafka client of the app (producers, consumers, admin clients) is built with: the
brokers, the connection's security, from the settings (KAFKA_SECURITY_PROTOCOL and friends), and how
soon a broker that was gone is tried again."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# The mechanisms kafka-python speaks with a username and password alone (GSSAPI and OAUTHBEARER
# need a Kerberos setup or a token provider the settings cannot describe).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# kafka-python backs off up to 30 s between tries at an unreachable broker, and its metadata refresh
# with it: a worker found a restarted Kafka up to 22 s late. Java clients cap this at 1 s too.
RECONNECT_BACKOFF_MAX_MS = 1_000


def client_kwargs() -> dict:
    """Keyword arguments for KafkaProducer, KafkaConsumer and KafkaAdminClient: bootstrap servers,
    security protocol, SASL mechanism and credentials, CA file, the reconnect backoff's cap. Raises
    ImproperlyConfigured on a combination kafka-python would only refuse when it first connects."""
    protocol = settings.KAFKA_SECURITY_PROTOCOL.upper()
    if protocol not in PROTOCOLS:
        raise ImproperlyConfigured(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    kwargs = {"bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS, "security_protocol": protocol,
              "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS}
    mechanism = settings.KAFKA_SASL_MECHANISM.upper()
    if protocol.startswith("SASL_"):
        if mechanism not in SASL_MECHANISMS:
            raise ImproperlyConfigured(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM, one of "
                                       f"{', '.join(SASL_MECHANISMS)} (got {mechanism or 'none'})")
        if not (settings.KAFKA_SASL_USERNAME and settings.KAFKA_SASL_PASSWORD):
            raise ImproperlyConfigured(f"KAFKA_SASL_MECHANISM={mechanism} needs KAFKA_SASL_USERNAME and "
                                       "KAFKA_SASL_PASSWORD")
        kwargs.update(sasl_mechanism=mechanism, sasl_plain_username=settings.KAFKA_SASL_USERNAME,
                      sasl_plain_password=settings.KAFKA_SASL_PASSWORD)
    elif mechanism:
        raise ImproperlyConfigured(f"KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is {protocol}: "
                                   "use SASL_SSL (or SASL_PLAINTEXT on a trusted network)")
    if settings.KAFKA_SSL_CAFILE:
        if not protocol.endswith("SSL"):
            raise ImproperlyConfigured(f"KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL is {protocol}: "
                                       "use SSL or SASL_SSL")
        kwargs["ssl_cafile"] = settings.KAFKA_SSL_CAFILE
    return kwargs
