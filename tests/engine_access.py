"""Knocking on the engine's door as someone else: another local user, on vLLM's unguarded routes.

Tests run as root here, and root ignores file modes, so "only the gateway can connect" is checked
from a process running as `nobody` (the system Python: the test venv may sit under a folder nobody
can enter). Each probe reports how far it got: "refused" (no connection), or the HTTP status."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess

import pytest

# What a stranger would try: load weights under a name, generate, read metrics, generate via /v1.
PROBES = [
    ("POST", "/adapters", {"name": "math", "src": "/tmp/evil"}),
    ("POST", "/invocations", {"prompt": "hi", "max_tokens": 1}),
    ("GET", "/metrics", None),
    ("POST", "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 1}),
]

_SCRIPT = r"""
import http.client, json, socket, sys
target, probes = json.loads(sys.argv[1]), json.loads(sys.argv[2])

class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(target["uds"])

out = []
for method, path, body in probes:
    try:
        c = Unix("vllm") if "uds" in target else http.client.HTTPConnection("127.0.0.1", target["port"], timeout=10)
        c.request(method, path, body=None if body is None else json.dumps(body), headers={"content-type": "application/json"})
        out.append(c.getresponse().status)
    except OSError as e:
        out.append("refused: " + type(e).__name__)
print(json.dumps(out))
"""


def as_stranger(target: dict, probes=PROBES) -> list:
    """Run the probes against {"uds": PATH} or {"port": N} as user `nobody`; one result per probe."""
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    python = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no system python3 for the other user to run")
    nobody = pwd.getpwnam("nobody")
    args = [python, "-c", _SCRIPT, json.dumps(target), json.dumps(probes)]
    r = subprocess.run(
        args,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
