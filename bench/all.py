"""Every benchmark scenario in sequence: fan-out, idle connections, persistence, many rooms over
Redis shards (rooms), the send script's identity check (sendpath), Redis memory per room and
message (redis_memory), the sidebar's per-user stream (sidebar) and a reconnect storm (storm).
Each runs in a process of its own (each sets Django up on a database of its own) and prints its
progress; at the end all tables are printed again and results/all.json sums them up (with each
scenario's JSON and PNG beside it).

    .venv/bin/python -m bench.all            # the full run (`make bench`)
    .venv/bin/python -m bench.all --quick    # a short one: small sizes
"""

import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, environment

SCENARIOS = ("fanout", "connections", "persistence", "rooms", "sendpath", "redis_memory", "sidebar", "storm")


def scenario_args(name: str, quick: bool, out: Path) -> list[str]:
    args = ["--out", str(out)]
    if quick:
        args += {"fanout": ["--receivers", "100", "--offered", "5000,10000", "--seconds", "3", "--one-user", "100"],
                 "connections": ["--steps", "200,500,1000"],
                 "persistence": ["--records", "20000"],
                 "rooms": ["--quick"],
                 "sendpath": ["--quick"],
                 "redis_memory": ["--quick"],
                 "sidebar": ["--quick"],
                 "storm": ["--quick"]}[name]
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
        importlib.import_module(f"bench.{name}").print_report(result)
        summary[name] = result
    (out / "all.json").write_text(json.dumps(summary, indent=2))
    print(f"\njson: {out / 'all.json'} (and one JSON and PNG per scenario beside it)")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
