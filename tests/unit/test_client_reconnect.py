"""The web client's reconnect hint (chat/static/chat/connection.js), run in Node: a 1013 close
("try again later", an instance shedding joins) waits what its reason asks, other closes do not."""

import json
import shutil
import subprocess

import pytest

from tests.support import ROOT

CONNECTION_JS = ROOT / "chat" / "static" / "chat" / "connection.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_a_1013_close_reason_sets_the_wait_and_other_closes_do_not():
    cases = [(1013, "retry_after=2.5"), (1013, ""), (1012, "retry_after=3"), (1013, "retry_after=999"),
             (1013, "retry_after=abc")]
    script = (f"import {{ retryHint }} from {json.dumps(CONNECTION_JS.as_uri())};\n"
              f"console.log(JSON.stringify({json.dumps(cases)}.map(([code, reason]) => retryHint({{code, reason}}))));")
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert json.loads(out) == [2500, 0, 0, 60000, 0]
