"""The launcher's process handling, on stand-in processes (the real stack: tests/integration)."""

import os
import subprocess
import sys

import pytest

from fedrouter.serving import launch


def test_wait_healthy_reports_a_process_that_exits_with_its_log(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("boom: the release is bad\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="code 3(.|\n)*the release is bad"):
        launch.wait_healthy(f"http://127.0.0.1:{launch.free_port()}", proc, timeout_s=30, log=log)


def live_members(pgid: int, wait_s: float = 10.0) -> list[str]:
    """Processes of group `pgid` that are not zombies (a reparented child is reaped a moment later)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + wait_s
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(stat.parent.name)
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


def test_stop_ends_the_whole_process_group():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"],
        start_new_session=True,
    )
    launch.stop(proc, grace_s=5)
    assert proc.poll() is not None
    assert live_members(proc.pid) == []  # no member of the group is left


FAKE_SERVE = """
import http.server, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as uvicorn does, even where SIGINT came in ignored
port = int(sys.argv[sys.argv.index("--port") + 1])
subprocess.Popen(["sleep", "300"])  # a child of the gateway, as its vLLM is
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""

DRIVER = """
import sys, time
from pathlib import Path
from fedrouter.serving import launch
launch.SERVE = [sys.executable, sys.argv[2]]
with launch.gateway("unused", Path(sys.argv[1]), backends=["http://127.0.0.1:9"]) as gw:
    print(gw.proc.pid, flush=True)
    time.sleep(300)
"""


def test_a_terminated_launcher_stops_the_stack_it_started(tmp_path):
    """`kill`, `timeout` or a CI limit sends SIGTERM to a benchmark or test; the gateway and its vLLM
    run in their own process group, so without the launcher's unwinding they would outlive it."""
    import signal

    fake = tmp_path / "fake_serve.py"
    fake.write_text(FAKE_SERVE)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path / "logs"), str(fake)], stdout=subprocess.PIPE, text=True
    )
    pgid = None
    try:
        pgid = int(driver.stdout.readline())
        os.killpg(pgid, 0)  # the stack is up
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 128 + signal.SIGTERM
        assert live_members(pgid) == []  # the gateway and its child are gone with it
    finally:
        driver.kill()
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
