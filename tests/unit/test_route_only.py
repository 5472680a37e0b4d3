"""Route-only mode (`--route-only`): in front of a platform that owns the adapters (a Kubernetes
inference gateway, faked here), the gateway only routes. The platform serves each adapter under the
release's name and does not answer /v1/models; the gateway never loads, unloads or stores an
adapter, across a reload too, and every answer still names its release and adapter."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.settings import GatewaySettings
from tests.unit.test_gateway_faults import ADMIN, USER, other_release

ADAPTERS = ("math", "geo", "sentiment")


class Platform:
    """An inference gateway that serves the base model and the adapters by name, and nothing else."""

    def __init__(self):
        self.calls: list[tuple[str, dict | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.url.path, body))
        if not request.url.path.startswith("/v1/chat/completions"):
            return httpx.Response(404, json={"error": "no route"})
        if body["model"] not in ("base", *ADAPTERS):
            return httpx.Response(404, json={"error": {"message": "unknown model", "code": 404}})
        answer = {"role": "assistant", "content": f"answered by {body['model']}"}
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": answer}],
            },
        )


def routed(tmp_path, platform: Platform) -> TestClient:
    v1 = other_release(tmp_path, "releases/v1", seed=0)
    settings = GatewaySettings(
        release=v1.path,
        backends=["http://platform"],
        route_only=True,
        sole_gateway=True,  # even so: route-only never unloads
        admin_token="secret",
        drain_timeout_s=5,
        connect_retry_s=0.3,
        adapter_store=tmp_path / "store",
    )
    return TestClient(create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(platform)))


def test_route_only_forwards_the_release_names_and_never_manages_adapters(tmp_path):
    platform = Platform()
    with routed(tmp_path, platform) as client:
        r = client.post("/v1/chat/completions", json={"model": "geo", "messages": USER})
        assert r.status_code == 200, r.text
        assert platform.calls[-1][1]["model"] == "geo"  # the release's name, not a content-derived one
        assert r.headers["x-fedrouter-release"] == "v1" and r.headers["x-fedrouter-adapter"] == "geo"
        r = client.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
        assert r.status_code == 200, r.text
        assert platform.calls[-1][1]["model"] in ADAPTERS
        assert client.post("/v1/chat/completions", json={"model": "base", "messages": USER}).status_code == 200

        v2 = other_release(tmp_path, "releases/v2", seed=10)
        r = client.post("/admin/reload", json={"release": str(v2.path)}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["status"] == "switched", r.text
        r = client.post("/v1/chat/completions", json={"model": "math", "messages": USER})
        assert r.status_code == 200 and r.headers["x-fedrouter-release"] == "v2"
        assert platform.calls[-1][1]["model"] == "math"
    managed = [path for path, _ in platform.calls if "lora_adapter" in path]
    assert managed == []  # nothing loaded or unloaded, at start, reload or retirement
    assert not (tmp_path / "store").exists()  # nothing stored


def test_route_only_needs_the_platform_url(tmp_path):
    v1 = other_release(tmp_path, "releases/v1", seed=0)
    with pytest.raises(ValueError, match="--backend"):
        create_app(GatewaySettings(release=v1.path, route_only=True), embedder=HashEmbedder(256))
