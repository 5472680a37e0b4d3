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

import pytest

pytest.importorskip("ray.serve")

from fedrouter.router.build import build_release  # noqa: E402
from fedrouter.router.embed import HashEmbedder  # noqa: E402
from fedrouter.serving import supervisor  # noqa: E402
from fedrouter.serving.adapter_store import AdapterStore  # noqa: E402
from fedrouter.serving.ray.engine import VLLMEngine  # noqa: E402
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
