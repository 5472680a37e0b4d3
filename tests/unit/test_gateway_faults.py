"""Faults around the gateway: replicas down or dying mid-request, failed reloads, the watcher,
the supervised vLLM's restart policy. Fake vLLM replicas behind one httpx transport."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.supervisor import VLLMSupervisor
from tests.conftest import fake_adapter
from tests.unit.test_gateway import FakeVLLM, make_release, vname

ADMIN = {"authorization": "Bearer secret"}
USER = [{"role": "user", "content": "What is the capital of Italy?"}]


class Replicas:
    """Several FakeVLLMs, one per host; each can be down (refuses connections) or break after
    accepting a request (ReadError: delivered, maybe processed)."""

    def __init__(self, hosts: list[str]):
        self.fakes = {h: FakeVLLM() for h in hosts}
        self.breaking: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.breaking and request.url.path.startswith("/v1/c"):
            self.fakes[host].requests.append({"broken": True})
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return self.fakes[host](request)


def gateway(tmp_path, replicas: Replicas, **kw):
    kw.setdefault("sole_gateway", True)  # one gateway: it unloads (shared replicas: test_shared_replicas.py)
    adapters = {n: fake_adapter(tmp_path / "src" / n, seed=i) for i, n in enumerate(("math", "geo", "sentiment"))}
    release = make_release(tmp_path / "releases" / "v1", adapters)
    settings = GatewaySettings(
        release=release.path.parent / "latest" if kw.get("watch") else release.path,
        backends=[f"http://{h}" for h in replicas.fakes],
        connect_retry_s=0.3,
        admin_token="secret",
        drain_timeout_s=5,
        **kw,
    )
    app = create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(replicas))
    return TestClient(app), adapters


def other_release(tmp_path, folder, seed=10, **kw):
    adapters = {
        n: fake_adapter(tmp_path / f"src{seed}" / n, seed=seed + i) for i, n in enumerate(("math", "geo", "sentiment"))
    }
    return make_release(tmp_path / folder, adapters, **kw)


def test_an_undelivered_request_goes_to_another_replica(tmp_path):
    replicas = Replicas(["a", "b"])
    client, _ = gateway(tmp_path, replicas)
    with client:
        replicas.fakes["a"].down = True
        for _ in range(4):
            assert client.post("/v1/chat/completions", json={"model": "math", "messages": USER}).status_code == 200
        assert len(replicas.fakes["b"].requests) == 4


def test_a_delivered_request_is_never_sent_twice(tmp_path):
    replicas = Replicas(["a", "b"])
    client, _ = gateway(tmp_path, replicas)
    with client:
        replicas.breaking = {"a", "b"}
        r = client.post("/v1/chat/completions", json={"model": "math", "messages": USER})
        assert r.status_code == 503 and r.headers["retry-after"]
        sent = sum(len(f.requests) for f in replicas.fakes.values())
        assert sent == 1  # one replica got it, and it was not re-sent to the other


def test_reload_with_a_replica_down_completes_and_registers_when_it_is_back(tmp_path):
    replicas = Replicas(["a", "b"])
    client, _ = gateway(tmp_path, replicas)
    with client:
        v2 = other_release(tmp_path, "releases/v2")
        replicas.fakes["b"].down = True
        r = client.post("/admin/reload", json={"release": str(v2.path)}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["status"] == "switched", r.text
        assert vname(v2, "geo") in replicas.fakes["a"].served
        assert vname(v2, "geo") not in replicas.fakes["b"].served
        replicas.fakes["b"].down = False
        for _ in range(50):  # the keeper registers the current adapters on the returning replica
            if vname(v2, "geo") in replicas.fakes["b"].served:
                break
            time.sleep(0.1)
        assert {vname(v2, a) for a in ("math", "geo", "sentiment")} <= replicas.fakes["b"].served


def test_reload_with_every_replica_down_is_a_503_that_says_why(tmp_path):
    replicas = Replicas(["a"])
    client, _ = gateway(tmp_path, replicas)
    with client:
        v2 = other_release(tmp_path, "releases/v2")
        replicas.fakes["a"].down = True
        r = client.post("/admin/reload", json={"release": str(v2.path)}, headers=ADMIN)
        assert r.status_code == 503 and "still serving v1" in r.json()["error"]["message"]
        assert "reachable" in r.json()["error"]["message"]
        replicas.fakes["a"].down = False
        assert client.get("/admin/release", headers=ADMIN).json()["release"] == "v1"


def test_a_failed_build_undoes_its_registrations(tmp_path):
    replicas = Replicas(["a"])
    client, _ = gateway(tmp_path, replicas)
    with client:
        before = set(replicas.fakes["a"].served)
        bad = other_release(tmp_path, "releases/v2")
        client.app.state.reloader._embedder = HashEmbedder(64)  # the router cannot be built: dims differ
        r = client.post("/admin/reload", json={"release": str(bad.path)}, headers=ADMIN)
        assert r.status_code == 503 and "could not build the router" in r.json()["error"]["message"]
        assert replicas.fakes["a"].served == before


def test_watch_retries_a_target_that_failed(tmp_path):
    replicas = Replicas(["a"])
    client, _ = gateway(tmp_path, replicas, watch=True, watch_interval_s=0.1)
    with client:
        releases = tmp_path / "releases"
        v2 = other_release(tmp_path, "staging/v2")
        centroids = (v2.path / "centroids.npy").read_bytes()
        (v2.path / "centroids.npy").unlink()  # not complete yet
        os.replace(_link(releases, v2.path), releases / "latest")
        time.sleep(0.5)
        assert client.get("/admin/release", headers=ADMIN).json()["release"] == "v1"
        (v2.path / "centroids.npy").write_bytes(centroids)
        for _ in range(50):
            if client.get("/admin/release", headers=ADMIN).json()["release"] == "v2":
                break
            time.sleep(0.1)
        assert client.get("/admin/release", headers=ADMIN).json()["release"] == "v2"


def _link(folder, target):
    tmp = folder / ".latest.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    return tmp


def test_supervisor_backoff_is_capped_and_its_socket_folder_private(tmp_path):
    s = VLLMSupervisor(None, [], 1, tmp_path / "log", "key", backoff_max_s=30)
    delays = []
    for failures in range(8):
        s.failures = failures
        delays.append(s.restart_delay())
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert s.url == f"unix:{s.socket}" and (s.socket.parent.stat().st_mode & 0o777) == 0o700
    with pytest.raises(ValueError, match="needs a release"):
        s.start()  # a restart reuses the first start's flags; there were none
    s.close()
    assert not s.socket.parent.exists()


def test_attached_vllm_base_model_is_the_entry_without_parent(tmp_path):
    """vLLM started as `vllm serve /models/base --lora-modules a=… b=…`: three models, one root."""
    replicas = Replicas(["a"])
    fake = replicas.fakes["a"]
    fake.base = "/models/base"
    fake.served = {"/models/base", "static-a", "static-b"}
    client, _ = gateway(tmp_path, replicas)
    with client:
        r = client.post("/v1/completions", json={"model": "base", "prompt": "hi"})
        assert r.status_code == 200 and r.json()["model"] == "base"
        assert fake.requests[-1]["model"] == "/models/base"


class SlowLoads:
    """Two fake vLLM replicas whose adapter loads take a moment; records the most loads in flight
    at one replica, and refuses the adapters in `refused`."""

    def __init__(self, refused: set[str] = frozenset()):
        self.fakes = {h: FakeVLLM() for h in ("r0", "r1")}
        self.inflight = {h: 0 for h in self.fakes}
        self.peak = 0
        self.refused = refused

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        import asyncio
        import json

        host = request.url.host
        if request.url.path != "/v1/load_lora_adapter":
            return self.fakes[host](request)
        self.inflight[host] += 1
        self.peak = max(self.peak, self.inflight[host])
        await asyncio.sleep(0.01)
        self.inflight[host] -= 1
        if json.loads(request.content)["lora_name"] in self.refused:
            return httpx.Response(400, text="rank too large")
        return self.fakes[host](request)


def test_adapters_load_concurrently_and_a_refusal_undoes_every_replica():
    import asyncio

    from fedrouter.serving.backends import BackendPool
    from fedrouter.serving.errors import BackendUnavailable
    from fedrouter.serving.loader import AdapterLoader

    names = {f"a{i}@d": f"/adapters/a{i}" for i in range(20)}

    async def register(fake: SlowLoads) -> list:
        pool = BackendPool(["http://r0", "http://r1"], GatewaySettings(), transport=httpx.MockTransport(fake))
        try:
            return await AdapterLoader(pool, concurrency=4).register(names)
        finally:
            await pool.close()

    fake = SlowLoads()
    loaded = asyncio.run(register(fake))
    assert len(loaded) == 40 and all(set(names) <= f.served for f in fake.fakes.values())
    assert fake.peak == 4  # loads overlap, at most register_concurrency at a time per replica

    fake = SlowLoads(refused={"a13@d"})
    with pytest.raises(BackendUnavailable, match="refused adapter 'a13@d'"):
        asyncio.run(register(fake))
    assert all(f.served == {"base"} for f in fake.fakes.values())  # nothing stays loaded anywhere
