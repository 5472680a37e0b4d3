"""Client-scoped ("local") routing at the gateway: a request that names its client is routed among
the clusters that client trained (the manifest's `client_clusters`); an unknown client, or none,
is routed among all of them. The response says which mode was used."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from fedrouter.router.embed import HashEmbedder
from fedrouter.router.release import MANIFEST
from fedrouter.serving.app import create_app
from fedrouter.serving.settings import GatewaySettings
from tests.unit.test_gateway import FakeVLLM, make_release

GEO = "What is the capital of Italy?"


def release_with_clients(folder, fake_adapters):
    """A release whose manifest says which clusters two clients trained (math 0, geo 1, sentiment 2)."""
    release = make_release(folder, fake_adapters)
    raw = json.loads((release.path / MANIFEST).read_text())
    raw["client_clusters"] = {"hospital-a": {"0": 40}, "hospital-b": {"1": 10, "2": 30}}
    raw.pop("digest")  # edited by hand: the digest is computed again at load
    (release.path / MANIFEST).write_text(json.dumps(raw))
    return release.path


@pytest.fixture
def release_path(tmp_path, fake_adapters):
    return release_with_clients(tmp_path / "releases" / "v1", fake_adapters)


def gateway(release_path, **settings) -> TestClient:
    """A gateway behind a trusted proxy that names the client (and shows the routing mode)."""
    settings = {"trust_client_header": True, "expose_routing_headers": True, **settings}
    s = GatewaySettings(release=release_path, backends=["http://fake-vllm"], connect_retry_s=0.2, **settings)
    return TestClient(create_app(s, embedder=HashEmbedder(256), transport=httpx.MockTransport(FakeVLLM())))


def ask(client: TestClient, headers: dict | None = None, **extra) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": GEO}], "max_tokens": 2, **extra}
    r = client.post("/v1/chat/completions", json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r


def test_a_named_client_is_routed_among_its_own_clusters(release_path):
    with gateway(release_path) as client:
        r = ask(client)
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("geo", "global")
        r = ask(client, {"x-fedrouter-client": "hospital-a"})  # trained only the math cluster
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("math", "local")
        assert r.json()["model"] == "math"
        r = ask(client, {"x-fedrouter-client": "hospital-b"})  # geo and sentiment: geo is nearest
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("geo", "local")


def test_an_unknown_client_is_routed_globally(release_path):
    with gateway(release_path) as client:
        r = ask(client, {"x-fedrouter-client": "nobody"})
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("geo", "global")


def test_the_user_field_names_the_client_only_when_the_operator_enables_it(release_path):
    with gateway(release_path) as client:
        r = ask(client, user="hospital-a")
        assert r.headers["x-fedrouter-routing"] == "global"
    with gateway(release_path, route_by_user=True) as client:
        r = ask(client, user="hospital-a")
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("math", "local")


def test_the_client_header_is_ignored_unless_trusted(release_path):
    """Without a trusted proxy (or an API key naming the client) nobody can probe client ids."""
    with gateway(release_path, trust_client_header=False) as client:
        r = ask(client, {"x-fedrouter-client": "hospital-a"})
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("geo", "global")
    with gateway(release_path, trust_client_header=False, expose_routing_headers=False) as client:
        r = ask(client, {"x-fedrouter-client": "hospital-a"})
        assert r.headers["x-fedrouter-adapter"] == "geo" and "x-fedrouter-routing" not in r.headers


def test_an_explicit_adapter_is_not_routed(release_path):
    with gateway(release_path) as client:
        body = {"model": "geo", "messages": [{"role": "user", "content": GEO}], "max_tokens": 2}
        r = client.post("/v1/chat/completions", json=body, headers={"x-fedrouter-client": "hospital-a"})
        assert r.status_code == 200 and r.headers["x-fedrouter-adapter"] == "geo"
        assert "x-fedrouter-routing" not in r.headers
