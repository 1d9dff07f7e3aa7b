"""What every benchmark scenario shares: the real stack (services, a database of the scenario's own,
the run's settings and users with sessions), what every JSON records about the machine, CPU and
memory readings from /proc, tables, and progress output."""

import atexit
import os
import platform
import re
import resource
import subprocess
import sys
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PACKAGES = ("django", "channels", "daphne", "uvicorn", "channels-redis", "kafka-python", "websockets", "uvloop")

# --- the stack ------------------------------------------------------------------------------------

RUN = uuid.uuid4().hex[:8]
ENV = {
    "DATABASE_URL": "postgres://chat:chat@127.0.0.1:5432/chat_bench",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPIC": f"chat.bench.{RUN}",
    "CHAT_REDIS_PREFIX": f"chat-bench-{RUN}",
    "CHAT_LAYER_PREFIX": f"chat-bench-layer-{RUN}",
    "SECRET_KEY": "bench-secret-key",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "CHAT_RATE_LIMIT": "1000000/1s",
    "CHAT_MAX_SOCKETS_PER_USER": "1000000",  # the connections scenario spreads thousands of sockets over 50 users
    "LOG_LEVEL": "WARNING",
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "PYTHONUNBUFFERED": "1",
}


def setup_django(database: str = "chat_bench") -> None:
    """Start the services (quick when up), create `database` afresh and set Django up on it, migrated,
    with the run's topic. Scenarios that may run beside a fan-out run use a database of their own:
    dropping chat_bench would kill that run."""
    import psycopg2
    from psycopg2 import sql

    subprocess.run([ROOT / "scripts" / "services.sh", "up"], check=True, stdout=subprocess.DEVNULL)
    admin = psycopg2.connect("postgres://chat:chat@127.0.0.1:5432/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    admin.close()
    ENV["DATABASE_URL"] = f"postgres://chat:chat@127.0.0.1:5432/{database}"
    os.environ.update(ENV)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from chat.bus.topics import delete_topics, ensure_topics

    ensure_topics()
    # The run's topics (chat.bench.<run>*) go when it ends, not pile up on the broker run after run.
    atexit.register(delete_topics, prefix=ENV["KAFKA_TOPIC"])


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **ENV, **extra}


def users_with_cookies(count: int, prefix: str) -> list[tuple[str, str]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    out = []
    for n in range(count):
        user = get_user_model().objects.create_user(username=f"{prefix}-{RUN}-{n}")
        client = Client()
        client.force_login(user)
        out.append((user.username, client.cookies["sessionid"].value))
    return out


# --- what every JSON records ----------------------------------------------------------------------

def environment() -> dict:
    """The machine, package versions and revision, for every JSON (figures mean little without)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(meminfo.split("MemTotal:")[1].split()[0])
    return {
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
                    "python": platform.python_version(), "platform": platform.platform(),
                    # The cores are shared: a high load at the start means the figures are low.
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "packages": {name: package(name) for name in PACKAGES},
        "revision": git("rev-parse", "--short", "HEAD"),
        # Figures from a tree with uncommitted changes are not those of the revision alone.
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --- CPU and memory -------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_ticks() -> list[int]:
    """The machine's CPU time since boot by kind, in clock ticks (the `cpu` line of /proc/stat: user,
    nice, system, idle, iowait, irq, softirq, steal, ...)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def cpu_speed_ms() -> float:
    """Milliseconds a fixed piece of pure-Python work takes (best of three), the machine's speed at
    that moment: on a shared VM the same work can take 23-38 ms within a minute, idle (other guests
    share the host), so runs and steps taken at different speeds are not comparable figure for figure."""
    def once() -> float:
        began, total = time.perf_counter(), 0
        for n in range(300_000):
            total += n * n % 7
        return (time.perf_counter() - began) * 1000

    return round(min(once() for _ in range(3)), 1)


class StackCpu:
    """CPU seconds used so far by each part of the stack, from /proc: the parts a scenario names (web
    instances, workers, the load generator's processes) and the services (by process name), so each
    step can show where the machine's cores went and whether the load generator got in the way."""

    SERVICES = {"redis-server": "redis", "java": "kafka", "postgres": "postgres"}

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids  # part -> its process ids (their threads included)

    @staticmethod
    def _seconds(pid: int) -> tuple[str, float]:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone
            return "", 0.0
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        return name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def sample(self) -> dict[str, float]:
        used = {part: sum(self._seconds(pid)[1] for pid in pids) for part, pids in self.pids.items()}
        ticks = cpu_ticks()
        # user, nice, system, irq, softirq: what ran here. Steal is time the hypervisor gave this
        # machine's cores to another guest: high steal marks a step measured on a disturbed machine.
        used["machine"] = (sum(ticks[:3]) + ticks[5] + ticks[6]) / CLOCK_TICKS
        used["steal"] = ticks[7] / CLOCK_TICKS
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                name, seconds = self._seconds(int(entry.name))
                part = self.SERVICES.get(name)
                if part:
                    used[part] = used.get(part, 0.0) + seconds
        return used

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, float]:
        """Each part's average share of the step in cores (1.0 = one core busy throughout)."""
        # max(0): a part's processes that ended during the step take their counted time with them
        return {part: round(max(0.0, after.get(part, 0.0) - before.get(part, 0.0)) / elapsed, 2) for part in after}


# --- output ---------------------------------------------------------------------------------------

def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).rjust(widths[c]) for c in columns))


def _per_second(rate: float) -> str:
    return f"{rate / 1000:.1f}k/s" if rate >= 1000 else f"{rate:.0f}/s"


class Progress:
    """How far a long step has got, on stderr: a tqdm bar when stderr is a terminal; otherwise (a log
    file, a pipe) a plain line every `every` seconds, e.g. "persistence: 120000/600000 records,
    41.2k/s" (the rate since the line before), instead of hundreds of carriage-return updates.

        with Progress("producing", total=len(values), unit="records") as progress:
            for value in progress.iterate(values): ...
    """

    def __init__(self, label: str, total: int, unit: str, *, initial: int = 0, every: float = 5.0) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.done = initial
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=label, unit=unit, leave=False, mininterval=0.5)
        self._line_at, self._line_done = time.monotonic(), initial

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self._line_at >= self.every:
            rate = (self.done - self._line_done) / (now - self._line_at)
            print(f"{self.label}: {self.done}/{self.total} {self.unit}, {_per_second(rate)}", file=sys.stderr,
                  flush=True)
            self._line_at, self._line_done = now, self.done

    def update_to(self, done: int) -> None:
        self.update(done - self.done)

    def iterate(self, items):
        for item in items:
            yield item
            self.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
