"""FedRouter on real Flower with a tiny random Llama: the simulation engine through `fedrouter
train`, the deployment engine (SuperLink + two SuperNodes on localhost), and the gateway serving
what training wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from fedrouter.router.release import load_release
from tests.integration.test_gateway_vllm import free_port, start_gateway, stop
from tests.tiny import make_tiny_llama

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TINY = {  # a small, fast federation: hash embedder, few steps
    "embedder_kind": "hash",
    "embedder": "hash-64",
    "train_per_task": "12",
    "test_per_task": "3",
    "batch_size": "4",
    "k_local": "2",
    "k_global": "3",
    "base_name": "tiny",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "base")


def train(out: Path | None, base: Path, strategy: str, *extra: str) -> subprocess.CompletedProcess:
    """`fedrouter train` on the tiny model; out=None with --resume: continue in the resumed run."""
    cmd = [
        sys.executable,
        "-m",
        "fedrouter.cli",
        "train",
        *(["--out", str(out)] if out else []),
        "--strategy",
        strategy,
        "--base",
        str(base),
        "--scenario",
        "dual",
        "--tasks",
        "add,capital,parity",
        "--clients",
        "3",
        "--rounds",
        "2",
        "--local-steps",
        "2",
        *extra,
    ]
    for k, v in TINY.items():
        cmd += ["--set", f"{k}={v}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_simulation_writes_a_release_the_gateway_serves(tmp_path, base):
    train(tmp_path / "run", base, "fedrouter")
    release = load_release(tmp_path / "run" / "releases" / "latest")
    assert release.id == "v1" and len(release.manifest.adapters) == 3
    assert release.manifest.training["strategy"] == "fedrouter" and len(release.manifest.training["history"]) == 2
    # round-robin (the reference's schedule): each client ran local_steps=2 steps of batch 4 a round
    history = release.manifest.training["history"]
    assert [h["steps"] for h in history] == [{"0": 2, "1": 2, "2": 2}] * 2
    assert [h["samples"] for h in history] == [{"0": 8, "1": 8, "2": 8}] * 2

    # evaluation with real generation on the tiny model, in every routing mode the release allows
    from fedrouter.training.data.scenarios import make_scenario
    from fedrouter.training.evaluate import evaluate_release

    result = evaluate_release(release.path, make_scenario("dual", ["add", "capital", "parity"], 3, 4, 2, seed=0))
    assert set(result["modes"]) == {"global", "local", "oracle", "base"} and result["n"] == 12
    # every mode has a score for each task
    assert all(set(per) == {"add", "capital", "parity"} for per in result["per_task"].values())

    # retraining continues from it and writes the next version
    train(None, base, "fedrouter", "--resume", str(tmp_path / "run"), "--rounds", "1")
    v2 = load_release(tmp_path / "run" / "releases" / "latest")
    assert v2.id == "v2" and v2.manifest.training["resumed_from"] == str(release.path)
    assert list(v2.manifest.adapters) == list(release.manifest.adapters)

    port = free_port()
    proc = start_gateway(
        ["--release", str(tmp_path / "run" / "releases" / "latest")],
        port,
        tmp_path / "gateway.log",
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What is the capital of Peru?"}], max_tokens=4
        )
        assert raw.headers["x-fedrouter-release"] == "v2"
        assert raw.headers["x-fedrouter-adapter"] in v2.manifest.adapters
    finally:
        stop(proc)


@pytest.mark.parametrize("strategy", ["fedavg", "fedavg-matched", "local", "clustered", "floral", "oracle"])
def test_every_baseline_writes_a_valid_release(tmp_path, base, strategy):
    """Every strategy's plan through real Flower: the release loads, has the adapters the strategy
    promises, and records which clusters each client trained."""
    train(tmp_path / "run", base, strategy)
    release = load_release(tmp_path / "run" / "releases" / "latest")
    m = release.manifest
    names = list(m.adapters)
    expected = {"fedavg": 1, "fedavg-matched": 1, "local": 3, "floral": 3, "oracle": 3, "clustered": 2}[strategy]
    assert len(names) == expected, names
    assert m.lora.r == {"fedavg-matched": 8 * 3, "floral": 8 * 3}.get(strategy, 8)  # K=3 rank-8 adaptors: rank 24
    if strategy == "oracle":
        assert names == ["add", "capital", "parity"]
    if strategy == "clustered":  # FedAvg warm-up in round 1, 3 clients grouped into k_clients=2 in round 2
        assert [h["clusters"] for h in m.training["history"]] == [1, 2]
    assert sorted(m.client_clusters) == ["0", "1", "2"]
    assert all(0 <= c < len(m.clusters) for counts in m.client_clusters.values() for c in counts)
    # the same counted compute as FedRouter's round-robin: 2 steps of batch 4 per client and round
    assert [h["steps"] for h in m.training["history"]] == [{"0": 2, "1": 2, "2": 2}] * 2
    assert [h["samples"] for h in m.training["history"]] == [{"0": 8, "1": 8, "2": 8}] * 2


def test_deployment_engine_on_localhost(tmp_path, base):
    """One SuperLink, two SuperNodes (insecure), `flwr run . <connection>`: the same app."""
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    (tmp_path / "flwr").mkdir()
    fleet, appio, control = free_port(), free_port(), free_port()
    (tmp_path / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "localtest"\n\n[superlink.localtest]\naddress = "127.0.0.1:{control}"\ninsecure = true\n'
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []

    def spawn(name: str, cmd: list[str]) -> None:
        with open(logs / f"{name}.log", "w") as out:
            procs.append(
                subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
                )
            )

    try:
        spawn(
            "superlink",
            [
                "flower-superlink",
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--fleet-api-address",
                f"127.0.0.1:{fleet}",
                "--serverappio-api-address",
                f"127.0.0.1:{appio}",
                "--control-api-address",
                f"127.0.0.1:{control}",
            ],
        )
        time.sleep(3)
        for pid in range(2):
            spawn(
                f"supernode{pid}",
                [
                    "flower-supernode",
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{fleet}",
                    "--clientappio-api-address",
                    f"127.0.0.1:{free_port()}",
                    "--node-config",
                    f"partition-id={pid} num-partitions=2",
                ],
            )
        out = tmp_path / "run"
        overrides = (
            f"strategy='fedrouter' out='{out}' base-model='{base}' base-name='tiny' num-clients=2 rounds=1 "
            "local-steps=2 tasks='add,capital' embedder-kind='hash' embedder='hash-64' train-per-task=8 "
            "test-per-task=2 k-global=2 batch-size=4"
        )
        run = subprocess.run(
            ["flwr", "run", str(ROOT), "localtest", "--stream", "--run-config", overrides],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            cwd=tmp_path,
        )
        logs_text = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.iterdir())
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:] + logs_text
        release = load_release(out / "releases" / "latest")
        assert release.manifest.training["num_clients"] == 2 and len(release.manifest.adapters) == 2
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
