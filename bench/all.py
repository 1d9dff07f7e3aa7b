"""Every benchmark scenario in sequence: fan-out, idle connections, persistence. Each runs in a
process of its own (each sets Django up on a database of its own) and prints its progress; at the
end all tables are printed again and results/all.json sums them up (with each scenario's JSON and
PNG beside it).

    .venv/bin/python -m bench.all            # the full run (`make bench`)
    .venv/bin/python -m bench.all --quick    # a short one: small sizes

The helpers at the top are shared by bench.connections and bench.persistence (what every JSON
records, tables, a database of a scenario's own).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("django", "channels", "daphne", "uvicorn", "channels-redis", "kafka-python", "websockets", "uvloop")
SCENARIOS = ("fanout", "connections", "persistence")


# --- shared by the scenarios ----------------------------------------------------------------------

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


def rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> list[int]:
    """The machine's CPU time since boot by kind, in clock ticks (the `cpu` line of /proc/stat: user,
    nice, system, idle, iowait, irq, softirq, steal, ...)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def cpu_speed_ms() -> float:
    """Milliseconds a fixed piece of pure-Python work takes (best of three), the machine's speed at
    that moment: on this VM the same work took 23-38 ms within a minute, idle (other guests share
    the host), so runs and steps taken at different speeds are not comparable figure for figure."""
    def once() -> float:
        began, total = time.perf_counter(), 0
        for n in range(300_000):
            total += n * n % 7
        return (time.perf_counter() - began) * 1000

    return round(min(once() for _ in range(3)), 1)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).rjust(widths[c]) for c in columns))


def fresh_database(name: str) -> None:
    """Set Django up on a new database `name` instead of stack's chat_bench: setup_django drops
    chat_bench, which would kill a fan-out run going on beside this one (and it ours)."""
    import psycopg2

    from bench import stack

    # Services first (quick when up), then the database, then Django migrates it.
    subprocess.run([ROOT / "scripts" / "services.sh", "up"], check=True, stdout=subprocess.DEVNULL)
    admin = psycopg2.connect("postgres://chat:chat@127.0.0.1:5432/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {name}")
    admin.close()
    stack.ENV["DATABASE_URL"] = f"postgres://chat:chat@127.0.0.1:5432/{name}"
    stack.setup_django(fresh_database=False)


# --- the whole run --------------------------------------------------------------------------------

def scenario_args(name: str, quick: bool, out: Path) -> list[str]:
    args = ["--out", str(out)]
    if quick:
        args += {"fanout": ["--receivers", "100", "--offered", "5000,10000", "--seconds", "3"],
                 "connections": ["--steps", "200,500,1000"],
                 "persistence": ["--records", "20000"]}[name]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that everything runs")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="which, in order")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.scenarios.split(",") if n]
    env = environment()
    failed = []
    for number, name in enumerate(names, 1):
        print(f"\n##### {number}/{len(names)}: {name}{' (quick)' if args.quick else ''}", flush=True)
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *scenario_args(name, args.quick, out)],
                              cwd=ROOT)
        print(f"##### {name}: {'done' if done.returncode == 0 else 'FAILED'} in {time.monotonic() - began:.0f} s",
              flush=True)
        if done.returncode != 0:
            failed.append(name)

    summary = {**env, "quick": args.quick, "failed": failed}
    print("\n##### All tables")
    for name in names:
        path = out / f"{name}.json"
        if name in failed or not path.exists():
            continue
        result = json.loads(path.read_text())
        print(f"\n== {name}")
        if name == "fanout":
            from bench import fanout

            fanout.print_table(result["rows"])
            # bench.fanout records the machine and revision, not the package versions: add them.
            result.setdefault("packages", env["packages"])
            path.write_text(json.dumps(result, indent=2))
        elif name == "connections":
            from bench import connections

            connections.print_report(result)
        else:
            from bench import persistence

            persistence.print_report(result)
        summary[name] = result
    (out / "all.json").write_text(json.dumps(summary, indent=2))
    print(f"\njson: {out / 'all.json'} (and one JSON and PNG per scenario beside it)")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
