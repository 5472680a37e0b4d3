"""`fedrouter train`'s process around the federation: what runs while Ray starts, and its exit."""

import os
import subprocess
import sys

import pytest


def test_a_failure_while_ray_starts_shuts_ray_down_and_is_raised(tmp_path, monkeypatch):
    """The apps' modules are imported in a thread while Ray's head starts: their failure must not
    leave Ray running behind the error."""
    import ray

    from fedrouter.training import run
    from fedrouter.training.config import TrainConfig

    def broken():
        raise ImportError("no module named 'peft'")

    monkeypatch.setattr(run, "_apps", broken)
    cfg = TrainConfig(out=str(tmp_path / "run"), base_model=str(tmp_path), tasks="add,capital", num_clients=2)
    with pytest.raises(ImportError, match="peft"):
        run.train(cfg, quiet=True)
    assert not ray.is_initialized()


def test_a_fresh_lora_that_cannot_be_made_fails_the_run_with_its_error(tmp_path):
    """The fresh LoRA is made in a thread the federation does not wait for; where it cannot be (no
    weights), the ServerApp meets the same failure when it needs the LoRA, and the run ends with
    that error, Ray stopped."""
    import ray

    from fedrouter.training.config import TrainConfig
    from fedrouter.training.run import train

    (tmp_path / "config.json").write_text("{}")  # a model folder without weights
    cfg = TrainConfig(out=str(tmp_path / "run"), base_model=str(tmp_path), tasks="add,capital", num_clients=2)
    with pytest.raises(ValueError, match="Unrecognized model"):  # transformers' word for it
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


def test_the_server_polls_for_its_clients_briefly_then_at_most_each_second(monkeypatch):
    """Under the simulation engine the clients connect well within a second: a first wait of a
    whole second cost every run up to a second."""
    from fedrouter.training import server_app

    class Grid:
        def __init__(self, polls_until_ready):
            self.polls, self.ready_at = 0, polls_until_ready

        def get_node_ids(self):
            self.polls += 1
            return [7, 3] if self.polls >= self.ready_at else [3]

    slept = []
    monkeypatch.setattr(server_app.time, "sleep", slept.append)
    assert server_app._wait_for_nodes(Grid(1), 2) == [3, 7] and slept == []
    assert server_app._wait_for_nodes(Grid(8), 2) == [3, 7]
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_no_cuda_device_follows_the_device_setting_and_never_contradicts_torch(monkeypatch):
    """`fedrouter train` skips importing torch before Ray starts only where torch could not use a
    CUDA GPU anyway."""
    from fedrouter.training.model import device
    from fedrouter.training.run import no_cuda_device

    for name, expected in (("cpu", True), ("mps", True), ("cuda", False), ("cuda:1", False)):
        monkeypatch.setenv("FEDROUTER_DEVICE", name)
        assert no_cuda_device() is expected
    monkeypatch.delenv("FEDROUTER_DEVICE")
    if no_cuda_device():
        assert device().type != "cuda"


def test_rays_workers_import_what_this_process_imports(tmp_path, monkeypatch):
    """The clients' PYTHONPATH reaches Ray's workers through the environment Ray's head inherits
    (then this process's environment is as it was); a cluster named by RAY_ADDRESS gets it as a
    runtime environment instead."""
    import ray

    from fedrouter.training.run import _pythonpath_for_ray, start_ray

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with _pythonpath_for_ray("/x") as runtime_env:
        assert runtime_env == {"env_vars": {"PYTHONPATH": "/x"}} and os.environ.get("PYTHONPATH") != "/x"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv("PYTHONPATH", "/before")

    (tmp_path / "only_here_marker.py").write_text('WHERE = "the driver\'s sys.path"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    start_ray({"num_cpus": 1, "include_dashboard": False, "log_to_driver": False}, print)
    try:
        assert os.environ["PYTHONPATH"] == "/before"

        @ray.remote
        def where():
            import only_here_marker

            return only_here_marker.WHERE

        assert ray.get(where.remote(), timeout=120) == "the driver's sys.path"
    finally:
        ray.shutdown()
