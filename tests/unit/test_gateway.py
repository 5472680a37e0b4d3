"""The gateway's own logic against a fake vLLM (an httpx transport); the real one is in
tests/integration."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from fedrouter.router.build import build_release
from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.registry import backend_adapter_name
from fedrouter.serving.settings import GatewaySettings
from tests.tiny import write_examples


class FakeVLLM:
    """Answers like vLLM's OpenAI server: echoes the model it was asked for."""

    def __init__(self, base: str = "base", key: str | None = None):
        self.served = {base}
        self.base = base
        self.key = key
        self.requests: list[dict] = []
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(401, json={"error": "Unauthorized"})
        path = request.url.path
        if path == "/v1/models":
            data = [{"id": m, "parent": None if m == self.base else self.base} for m in sorted(self.served)]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        if path == "/v1/load_lora_adapter":
            self.served.add(body["lora_name"])
            return httpx.Response(200, text="ok")
        if path == "/v1/unload_lora_adapter":
            self.served.discard(body["lora_name"])
            return httpx.Response(200, text="ok")
        self.requests.append(body)
        if body["model"] not in self.served:
            return httpx.Response(404, json={"error": {"message": "not found", "type": "NotFoundError", "code": 404}})
        if body.get("max_tokens", 1) < 0:
            return httpx.Response(
                400,
                json={
                    "error": {
                        "message": "max_tokens must be at least 0",
                        "type": "BadRequestError",
                        "param": "max_tokens",
                        "code": 400,
                    }
                },
            )
        if body.get("stream"):
            chunks = [{"model": body["model"], "choices": [{"text": t}]} for t in ("a", "b")]
            sse = "".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"id": "x", "model": body["model"], "choices": [{"text": "ok"}]})


@pytest.fixture
def vllm():
    return FakeVLLM()


def vname(client_or_release, adapter):
    """The vLLM name the gateway gives an adapter of the release it serves (or of `release`)."""
    release = getattr(client_or_release, "app", None)
    release = release.state.registry.current.release if release is not None else client_or_release
    return backend_adapter_name(adapter, release.manifest.digests[adapter])


def make_release(folder, fake_adapters, base="base"):
    return build_release(
        folder,
        base_model=base,
        adapters=fake_adapters,
        examples=write_examples(folder.parent / "ex"),
        embedder=HashEmbedder(256),
    )


@pytest.fixture
def client(tmp_path, fake_adapters, vllm):
    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    settings = GatewaySettings(
        release=release.path,
        backends=["http://fake-vllm"],
        sole_gateway=True,  # the only gateway on this fake: retired adapters are unloaded
        connect_retry_s=0.2,
        admin_token="secret",
        drain_timeout_s=5,
    )
    app = create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(vllm))
    with TestClient(app) as c:
        yield c


def chat(client, model, text="What is the capital of Italy?", **extra):
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}], **extra}
    )


def test_adapters_are_registered_under_content_names(client, vllm):
    names = {vname(client, a) for a in ("math", "geo", "sentiment")}
    assert names <= vllm.served and all("@" in n and "v1" not in n for n in names)


def test_auto_routes_and_reports(client, vllm):
    r = chat(client, "auto")
    assert r.status_code == 200
    assert r.json()["model"] == "geo" and vllm.requests[-1]["model"] == vname(client, "geo")
    assert r.headers["x-fedrouter-adapter"] == "geo" and r.headers["x-fedrouter-release"] == "v1"
    assert "x-fedrouter-score" not in r.headers and "x-fedrouter-routing" not in r.headers  # private by default


def test_auto_routes_on_last_user_message_and_text_parts(client, vllm):
    messages = [
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Review: I loved this movie, it was wonderful. Sentiment?"}],
        },
    ]
    r = client.post("/v1/chat/completions", json={"model": "auto", "messages": messages})
    assert r.json()["model"] == "sentiment"


def test_explicit_adapter_and_base(client, vllm):
    assert chat(client, "math").json()["model"] == "math" and vllm.requests[-1]["model"] == vname(client, "math")
    r = client.post("/v1/completions", json={"model": "base", "prompt": "hello"})
    assert r.json()["model"] == "base" and "x-fedrouter-score" not in r.headers


def test_completions_auto_routes_on_prompt(client):
    r = client.post("/v1/completions", json={"model": "auto", "prompt": ["Compute 7 times 8."]})
    assert r.headers["x-fedrouter-adapter"] == "math"


def test_stream_rewrites_model_in_every_chunk(client):
    with client.stream(
        "POST", "/v1/completions", json={"model": "auto", "prompt": "Compute 7 times 8.", "stream": True}
    ) as r:
        assert r.status_code == 200 and r.headers["x-fedrouter-adapter"] == "math"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["model"] for e in events[:-1]] == ["math", "math"]


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        (json.dumps({"model": "auto", "messages": "hi"}).encode(), 400, "messages"),
        (json.dumps({"model": "auto", "messages": [{"role": "user", "content": []}]}).encode(), 400, "model"),
        (json.dumps({"model": "auto", "messages": [{"role": 7, "content": "x"}]}).encode(), 400, "messages[0].role"),
        (json.dumps({"model": "/etc/passwd", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model"),
        (json.dumps({"model": "math@v1", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model"),
    ],
)
def test_bad_input_gets_openai_shaped_4xx(client, body, status, param):
    r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["param"] == param and isinstance(err["code"], str)


def test_completions_prompt_validation(client):
    assert client.post("/v1/completions", json={"model": "auto", "prompt": 5}).status_code == 400
    r = client.post("/v1/completions", json={"model": "auto", "prompt": ["a", "b"]})
    assert r.status_code == 400 and "one prompt per request" in r.json()["error"]["message"]
    assert client.post("/v1/completions", json={"model": "auto", "prompt": [1, 2, 3]}).status_code == 400
    assert client.post("/v1/completions", json={"model": "math", "prompt": [1, 2, 3]}).status_code == 200


def test_field_errors_are_caught_at_the_edge_on_every_path(client, vllm):
    sent = len(vllm.requests)
    for model in ("math", "auto", "base"):
        r = chat(client, model, max_tokens=-1)
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert len(vllm.requests) == sent  # nothing reached vLLM


def test_backend_down_is_503(client, vllm):
    vllm.down = True
    r = chat(client, "auto")
    assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
    assert r.headers["retry-after"] and "fake-vllm" not in r.text
    assert client.get("/health").status_code == 503


def test_models_lists_auto_base_and_adapters(client):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["auto", "base", "math", "geo", "sentiment"]
    assert all(m["parent"] == "base" for m in data[2:])
    assert not any("@" in m["id"] or "/" in m["root"] for m in data)
    assert client.get("/v1/models/geo").json()["parent"] == "base"
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_health_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/admin/health", headers=ADMIN).json()["release"] == "v1"
    chat(client, "auto")
    chat(client, "nope")
    text = client.get("/metrics").text
    assert 'fedrouter_requests_total{adapter="geo",selection="auto",status="200"} 1.0' in text
    assert 'fedrouter_requests_total{adapter="-",selection="explicit",status="404"} 1.0' in text
    assert "fedrouter_routing_seconds_count 1.0" in text


def test_unknown_route_is_openai_shaped_404(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


ADMIN = {"authorization": "Bearer secret"}


def test_admin_routes_refuse_missing_or_wrong_token(client):
    assert client.post("/admin/reload", json={"release": "x"}).status_code == 404
    assert (
        client.post("/admin/reload", json={"release": "x"}, headers={"authorization": "Bearer nope"}).status_code == 404
    )
    assert client.get("/admin/release").status_code == 404
    assert client.get("/admin/release", headers=ADMIN).json()["release"] == "v1"


def test_admin_routes_absent_without_token(tmp_path, fake_adapters, vllm):
    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    app = create_app(
        GatewaySettings(release=release.path, backends=["http://fake"]),
        embedder=HashEmbedder(256),
        transport=httpx.MockTransport(vllm),
    )
    with TestClient(app) as c:
        assert c.post("/admin/reload", json={"release": "x"}, headers=ADMIN).status_code == 404


def test_reload_swaps_then_unloads_the_old_adapters(client, vllm, tmp_path, fake_adapters):
    v2 = make_release(tmp_path / "releases" / "v2", fake_adapters)
    r = client.post("/admin/reload", json={"release": str(v2.path)}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "switched" and r.json()["previous"] == "v1"
    resp = chat(client, "auto")
    # same weights: the same vLLM names, shared by both releases and kept when v1 retires
    assert resp.headers["x-fedrouter-release"] == "v2" and vllm.requests[-1]["model"] == vname(v2, "geo")
    assert vname(v2, "geo") == vname(client, "geo") and vname(v2, "geo") in vllm.served
    r = client.post("/admin/reload", json={"release": str(v2.path)}, headers=ADMIN)
    assert r.json()["status"] == "unchanged"
    r = client.post("/admin/rollback", headers=ADMIN)
    assert r.json()["release"] == "v1" and chat(client, "auto").headers["x-fedrouter-release"] == "v1"


def test_bad_release_is_refused_and_the_good_one_keeps_serving(client, tmp_path, fake_adapters):
    bad = make_release(tmp_path / "releases" / "v3", fake_adapters)
    (bad.path / "centroids.npy").unlink()
    r = client.post("/admin/reload", json={"release": str(bad.path)}, headers=ADMIN)
    assert r.status_code == 400 and "still serving v1" in r.json()["error"]["message"]
    assert "missing centroids.npy" in r.json()["error"]["message"]
    other_base = make_release(tmp_path / "other" / "v4", fake_adapters, base="another-base")
    r = client.post("/admin/reload", json={"release": str(other_base.path)}, headers=ADMIN)
    assert r.status_code == 400 and "base model" in r.json()["error"]["message"]
    assert client.post("/admin/reload", json={"release": 5}, headers=ADMIN).status_code == 400
    assert chat(client, "auto").headers["x-fedrouter-release"] == "v1"


def test_rollback_without_previous_is_409(client):
    r = client.post("/admin/rollback", headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["message"] == "no previous release to roll back to"


def test_two_runs_both_called_v1_are_different_releases(client, vllm, tmp_path):
    """Identity is content: another run's `v1` with other weights switches, under other vLLM names."""
    from tests.conftest import fake_adapter

    other = {
        n: fake_adapter(tmp_path / "run_b" / "src" / n, seed=10 + i) for i, n in enumerate(("math", "geo", "sentiment"))
    }
    run_b = make_release(tmp_path / "run_b" / "releases" / "v1", other)
    old_geo = vname(client, "geo")
    r = client.post("/admin/reload", json={"release": str(run_b.path)}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "switched" and r.json()["release"] == "v1"
    assert chat(client, "geo").status_code == 200 and vllm.requests[-1]["model"] == vname(run_b, "geo") != old_geo
    import time

    for _ in range(50):  # the first run's adapters are unloaded once its requests are done
        if old_geo not in vllm.served:
            break
        time.sleep(0.05)
    assert old_geo not in vllm.served
