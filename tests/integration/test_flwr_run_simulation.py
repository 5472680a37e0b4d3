"""`flwr run .` against Flower's own local simulation connection (`address = ":local:"`): the
Flower CLI starts a managed SuperLink in simulation mode and runs fedrouter's app unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrouter.router.release import load_release
from fedrouter.training.run import RAY_COLD_START
from tests.integration.test_gateway_vllm import free_port
from tests.tiny import make_tiny_llama

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_flwr_run_on_the_local_simulation_connection(tmp_path):
    base = make_tiny_llama(tmp_path / "base")
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    env = {
        **os.environ,
        "FLWR_HOME": str(home),  # the managed SuperLink keeps its database and log here
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        # the app's [project].dependencies must not be installed into a fresh environment
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # Flower's simulation process talks gRPC while Ray forks its head's processes: gRPC's fork
        # handler can crash the child before it execs the GCS server (CI saw it twice in a row)
        "GRPC_ENABLE_FORK_SUPPORT": "0",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    out = tmp_path / "run"
    overrides = (
        f"strategy='fedrouter' out='{out}' base-model='{base}' base-name='tiny' num-clients=2 rounds=1 "
        "local-steps=2 tasks='add,capital' embedder-kind='hash' embedder='hash-64' train-per-task=8 "
        "test-per-task=2 k-global=2 batch-size=4"
    )
    try:
        for attempt in (1, 2):
            run = subprocess.run(
                [
                    "flwr",
                    "run",
                    str(ROOT),
                    "local",
                    "--stream",
                    "--federation-config",
                    "num-supernodes=2",
                    "--run-config",
                    overrides,
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
                cwd=tmp_path,
            )
            # Ray's head waits a fixed 30 s for its GCS server; if the server never starts (the gRPC
            # fork crash above, or anything else), Flower gives up: run once more.
            if RAY_COLD_START not in run.stdout + run.stderr or attempt == 2:
                break
        log = home / "local-superlink" / "superlink.log"
        said = run.stdout[-3000:] + run.stderr[-2000:] + (log.read_text()[-3000:] if log.exists() else "")
        # `flwr run` can exit 0 when the ServerApp failed: check the release too, and show the logs
        assert run.returncode == 0 and (out / "releases" / "latest").exists(), said
        release = load_release(out / "releases" / "latest")
        assert release.manifest.training["num_clients"] == 2 and len(release.manifest.adapters) == 2
    finally:
        # the managed SuperLink is detached (its own session); its command line names our FLWR_HOME
        subprocess.run(["pkill", "-f", str(home)], check=False)
