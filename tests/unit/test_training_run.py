"""`fedrouter train`'s process around the federation: what runs while Ray starts, and its exit."""

import os
import subprocess
import sys

import pytest


def test_a_failure_while_ray_starts_shuts_ray_down_and_is_raised(tmp_path, monkeypatch):
    """The apps are made ready in a thread while Ray's head starts: their failure must not leave
    Ray running behind the error."""
    import ray

    from fedrouter.training import server_app
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.run import train

    def broken(cfg):
        raise FileNotFoundError(f"no model weights in {cfg.base_model}")

    monkeypatch.setattr(server_app, "prepare", broken)
    cfg = TrainConfig(out=str(tmp_path / "run"), base_model=str(tmp_path), tasks="add,capital", num_clients=2)
    with pytest.raises(FileNotFoundError, match="no model weights"):
        train(cfg, quiet=True)
    assert not ray.is_initialized()


def test_exit_at_once_delivers_what_was_written_and_exits_0(tmp_path):
    log = tmp_path / "log.txt"
    script = f"""
import logging, sys
logging.basicConfig(filename={str(log)!r}, level=logging.INFO)
logging.getLogger("x").info("logged line")
sys.stdout.write("y" * 200000 + "\\n")  # more than the buffer: written through
sys.stdout.write("last line\\n")  # still in the buffer
from fedrouter.cli import exit_at_once
exit_at_once()
print("never")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as into a pipe
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("last line\n") and "never" not in done.stdout
    assert "logged line" in log.read_text()
