"""The Ray engine's vLLM is reachable by its replica alone, and reads adapters from the
content-addressed store: an engine replica (serving/ray/engine.py `VLLMEngine`) started with a
stand-in for vLLM (benchmarks/stub_vllm.py, on the flags vLLM gets) in place of the real one,
which tests/integration/test_ray_vllm.py runs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve")

from fedrouter.router.build import build_release  # noqa: E402
from fedrouter.router.embed import HashEmbedder  # noqa: E402
from fedrouter.serving import supervisor  # noqa: E402
from fedrouter.serving.adapter_store import AdapterStore  # noqa: E402
from fedrouter.serving.ray import engine  # noqa: E402
from fedrouter.serving.ray.engine import VLLMEngine, cpu_binding, own_cores  # noqa: E402
from fedrouter.serving.registry import backend_adapter_name  # noqa: E402
from tests.engine_access import as_stranger  # noqa: E402
from tests.tiny import write_examples  # noqa: E402

STUB = Path(__file__).resolve().parents[2] / "benchmarks" / "stub_vllm.py"


@pytest.fixture
def release(tmp_path, fake_adapters):
    return build_release(
        tmp_path / "v1",
        base_model="base",
        adapters=fake_adapters,
        examples=write_examples(tmp_path / "examples"),
        embedder=HashEmbedder(256),
    )


def test_the_engine_replicas_vllm_listens_on_a_private_socket_only_it_reaches(tmp_path, release, monkeypatch):
    started: list[list[str]] = []

    def stand_in(rel, listen, extra_args=(), max_new_tokens=None):  # vLLM's listening flags, given to the stand-in
        started.append([*listen, *extra_args])
        return [sys.executable, str(STUB), *listen]

    monkeypatch.setattr(supervisor, "vllm_command", stand_in)
    engine = VLLMEngine(str(release.path), models_per_replica=2, start_timeout_s=120)
    folder = engine.supervisor.socket.parent
    try:
        (flags,) = started
        assert flags[:2] == ["--uds", str(engine.supervisor.socket)] and "--port" not in flags
        assert (os.stat(folder).st_mode & 0o777) == 0o700 and folder.stat().st_uid == os.geteuid()
        engine.check_health()

        digest = release.manifest.digests["math"]
        stored = str(AdapterStore(tmp_path / "store").put(digest, release.adapter_dir("math")))
        name = backend_adapter_name("math", digest)
        body = json.dumps({"model": name, "prompt": "hi"}).encode()

        async def through_the_replica():
            items = [item async for item in engine.generate("/v1/completions", body, name, stored)]
            models = (await engine.client.get("/v1/models")).json()["data"]
            await engine.client.aclose()
            return items, models

        items, models = asyncio.run(through_the_replica())
        assert items[0]["status"] == 200 and json.loads(b"".join(items[1:]))["model"] == name
        assert {m["id"]: m["root"] for m in models}[name] == stored  # loaded from the store's folder

        probes = as_stranger({"uds": str(engine.supervisor.socket)})  # another local user
        assert all(str(p).startswith("refused") for p in probes), probes
    finally:
        engine.__del__()
    assert not folder.exists()  # the replica's shutdown takes the socket folder with it


def test_engine_replicas_sharing_a_cpu_node_compute_on_their_own_cores(monkeypatch):
    """vLLM's `auto` binding puts every vLLM of a node on the same cores: each engine replica binds
    its vLLM to its own slice instead, by its rank on the node."""
    assert [own_cores(r, 1, [0, 1]) for r in range(3)] == ["0", "1", "0"]  # a third replica shares
    assert [own_cores(r, 2, [0, 1, 2, 3]) for r in range(2)] == ["0,1", "2,3"]
    assert own_cores(0, 8, [4, 5]) == "4,5"  # never more cores than the node has
    monkeypatch.delenv(engine.CPU_BIND, raising=False)
    assert cpu_binding() == {}  # outside a Serve replica: vLLM's own choice

    import ray

    cpus = {"CPU": 0.5}
    monkeypatch.setattr(
        engine.serve, "get_replica_context", lambda: SimpleNamespace(rank=SimpleNamespace(local_rank=1))
    )
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_assigned_resources=lambda: cpus))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert cpu_binding() == {"VLLM_CPU_OMP_THREADS_BIND": "1"}  # rank 1, half a CPU: one core, the second
    cpus["CPU"] = 2.0
    assert cpu_binding() == {"VLLM_CPU_OMP_THREADS_BIND": "0,1"}  # two CPUs on a 2-core node: both
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert cpu_binding() == {}  # a GPU replica: nothing to bind
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setenv(engine.CPU_BIND, "3")
    assert cpu_binding() == {}  # the user's binding stands
