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


def test_stop_ends_the_whole_process_group():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"],
        start_new_session=True,
    )
    launch.stop(proc, grace_s=5)
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no member of the group is left
