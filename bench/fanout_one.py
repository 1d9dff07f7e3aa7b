"""One server's run of bench.fanout, in a process of its own."""

import json
import sys
from pathlib import Path

from bench.fanout import run

server, receivers, rates, seconds, senders, out = sys.argv[1:7]
result = run(server, int(receivers), [int(r) for r in rates.split(",")], float(seconds), int(senders))
Path(out).write_text(json.dumps(result))
