"""Two gateways attached to the same vLLM replicas (`--backend` on both, fake replicas here): one
switches to a new release and retires the old one, the other still serves the old one — and none
of its requests meets an adapter unloaded under it. Attached replicas may be shared, so a gateway
never unloads from them unless declared their only user (`sole_gateway`, tested alone in
test_gateway.py and test_gateway_faults.py)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient

from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.settings import GatewaySettings
from tests.unit.test_gateway import vname
from tests.unit.test_gateway_faults import ADMIN, USER, Replicas, other_release


class Recording(Replicas):
    """The replicas, remembering every unload asked of them."""

    def __init__(self, hosts: list[str]):
        super().__init__(hosts)
        self.unloads: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/unload_lora_adapter":
            self.unloads.append(request.content.decode())
        return super().__call__(request)


def attached(release, replicas: Replicas, tmp_path) -> TestClient:
    settings = GatewaySettings(
        release=release.path,
        backends=[f"http://{h}" for h in replicas.fakes],
        admin_token="secret",
        drain_timeout_s=5,
        connect_retry_s=0.3,
        adapter_store=tmp_path / "store",
    )
    return TestClient(create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(replicas)))


def test_a_gateway_retiring_a_release_never_unloads_what_another_gateway_serves(tmp_path):
    replicas = Recording(["a", "b"])
    v1, v2 = other_release(tmp_path, "releases/v1", seed=0), other_release(tmp_path, "releases/v2", seed=10)
    with attached(v1, replicas, tmp_path) as first, attached(v1, replicas, tmp_path) as second:
        r = first.post("/admin/reload", json={"release": str(v2.path)}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["status"] == "switched"

        async def retired() -> None:
            await asyncio.gather(*first.app.state.reloader.retiring)

        first.portal.call(retired)  # the first gateway is done with v1
        for model in ("math", "geo", "sentiment", "auto") * 4:
            r = second.post("/v1/chat/completions", json={"model": model, "messages": USER})
            assert r.status_code == 200, r.text  # before: 404 from vLLM, the adapter unloaded under it
            assert r.headers["x-fedrouter-release"] == "v1"
        assert first.post("/v1/chat/completions", json={"model": "math", "messages": USER}).json()["model"] == "math"
    assert replicas.unloads == []
    for fake in replicas.fakes.values():  # both releases stay registered; vLLM's LRU keeps memory bounded
        assert {vname(v1, a) for a in ("math", "geo")} | {vname(v2, a) for a in ("math", "geo")} <= fake.served
