"""One server's run of bench.fanout, in a process of its own: its options as JSON, then the result's path."""

import json
import sys
from pathlib import Path

from bench.fanout import run

options, out = sys.argv[1:3]
result = run(**json.loads(options))
Path(out).write_text(json.dumps(result))
