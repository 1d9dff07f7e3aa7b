import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kafka.errors import FencedInstanceIdError
from prometheus_client import start_http_server

from chat.bus.worker import MessageWorker


class Command(BaseCommand):
    help = "Consume chat messages from Kafka and store them in the database (one consumer-group member)."

    def add_arguments(self, parser):
        parser.add_argument("--group", default=settings.KAFKA_CONSUMER_GROUP,
                            help="Kafka consumer group id (default: KAFKA_CONSUMER_GROUP, else chat-store).")
        parser.add_argument("--topic", default=None, help="Topic to consume (default: KAFKA_TOPIC).")
        parser.add_argument("--max-records", type=int, default=5000, help="Records per poll and bulk write.")
        parser.add_argument("--writers", type=int, default=2,
                            help="Writer threads, each with its own database connection; a batch is split "
                                 "over them by room (default: 2).")
        parser.add_argument("--idle-exit", type=float, default=None, help="Exit after this many idle seconds.")
        parser.add_argument("--progress-every", type=float, default=5.0, help="Seconds between progress lines.")
        parser.add_argument("--cluster-check-every", type=float, default=15.0,
                            help="Seconds between two looks at the Kafka cluster (brokers answering, partitions "
                                 "under min.insync.replicas) for the metrics and the log.")
        parser.add_argument("--instance-id", default=settings.WORKER_INSTANCE_ID,
                            help="Static group membership: a worker restarted with the same id gets its partitions "
                                 "back at once. Unique per worker; '{hostname}' is replaced by the host's name "
                                 "(default: WORKER_INSTANCE_ID, else a dynamic member).")
        parser.add_argument("--metrics-port", type=int, default=settings.WORKER_METRICS_PORT,
                            help="Serve Prometheus metrics on this port (0: off; default: WORKER_METRICS_PORT).")

    def handle(self, *args, **options):
        if not settings.KAFKA_BOOTSTRAP_SERVERS:
            raise CommandError("KAFKA_BOOTSTRAP_SERVERS is not set: the embedded default stores messages inline.")
        worker = MessageWorker(
            group_id=options["group"],
            topic=options["topic"],
            max_records=options["max_records"],
            writers=options["writers"],
            idle_exit=options["idle_exit"],
            progress_every=options["progress_every"],
            cluster_check_every=options["cluster_check_every"],
            instance_id=options["instance_id"].replace("{hostname}", socket.gethostname()),
            out=self.stdout,
        )
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr=settings.WORKER_METRICS_ADDR)
            self.stdout.write(f"metrics on http://{settings.WORKER_METRICS_ADDR}:{options['metrics_port']}/metrics")
        worker.install_signal_handlers()
        try:
            worker.run()
        except FencedInstanceIdError as exc:
            raise CommandError(f"another worker of group {options['group']} joined with instance id "
                               f"{worker.instance_id}: each worker needs an id of its own") from exc
