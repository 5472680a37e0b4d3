"""The gateway's edge: request ids and release headers on every answer, HEAD /health, private
routing headers, API keys (clients, adapter scopes), and the bounds on bodies and connections."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import uvicorn
from fastapi import Request
from fastapi.testclient import TestClient

from fedrouter.cli import build_parser
from fedrouter.cli.serve import server_options, settings_from
from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.body import BodyBudget, read_json
from fedrouter.serving.settings import GatewaySettings
from tests.unit.test_client_routing import release_with_clients
from tests.unit.test_gateway import FakeVLLM
from tests.unit.test_gateway_abuse import Live, free_port

pytestmark = pytest.mark.timeout(120)
GEO = [{"role": "user", "content": "What is the capital of Italy?"}]
KEYS = {
    "sk-open": {},
    "sk-a": {"client": "hospital-a"},
    "sk-geo": {"adapters": ["geo", "sentiment"]},
    "sk-math-only": {"adapters": ["math"]},
}


@pytest.fixture
def release_path(tmp_path, fake_adapters):
    return release_with_clients(tmp_path / "releases" / "v1", fake_adapters)


def app_for(release_path, vllm=None, **settings):
    s = GatewaySettings(release=release_path, backends=["http://fake-vllm"], connect_retry_s=0.2, **settings)
    return create_app(s, embedder=HashEmbedder(256), transport=httpx.MockTransport(vllm or FakeVLLM()))


def chat(client, model="auto", key=None, headers=None, **extra):
    h = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": GEO, **extra}
    return client.post("/v1/chat/completions", json=body, headers={**h, **(headers or {})})


def test_request_ids_are_echoed_or_made(release_path):
    with TestClient(app_for(release_path)) as client:
        assert chat(client, headers={"x-request-id": "abc-123:7"}).headers["x-request-id"] == "abc-123:7"
        made = {chat(client).headers["x-request-id"] for _ in range(2)}
        assert len(made) == 2 and all(len(m) == 32 for m in made)
        for bad in ("x" * 129, "a b", "<script>", "é".encode()):
            rid = chat(client, headers={"x-request-id": bad}).headers["x-request-id"]
            assert rid != bad and len(rid) == 32
        for r in (client.get("/nothing"), chat(client, "nope"), client.get("/health"), client.get("/metrics")):
            assert len(r.headers["x-request-id"]) == 32


def test_release_headers_on_every_answer(release_path):
    vllm = FakeVLLM()
    with TestClient(app_for(release_path, vllm)) as client:
        answers = [
            chat(client),
            chat(client, "nope"),
            client.post("/v1/completions", content=b"{"),
            client.get("/health"),
        ]
        answers += [client.get("/v1/models"), client.get("/nothing")]
        vllm.down = True
        answers.append(chat(client, "math"))
        assert [r.status_code for r in answers] == [200, 404, 400, 200, 200, 404, 503]
        assert all(r.headers["x-fedrouter-release"] == "v1" for r in answers)


def test_head_health(release_path):
    vllm = FakeVLLM()
    with TestClient(app_for(release_path, vllm)) as client:
        r = client.head("/health")
        assert r.status_code == 200 and r.content == b"" and r.headers["x-fedrouter-release"] == "v1"
        vllm.down = True
        chat(client, "math")  # marks the replica down
        assert client.head("/health").status_code == 503


def test_routing_score_and_mode_only_when_exposed(release_path):
    with TestClient(app_for(release_path)) as client:
        r = chat(client)
        assert r.headers["x-fedrouter-adapter"] == "geo"
        assert "x-fedrouter-score" not in r.headers and "x-fedrouter-routing" not in r.headers
    with TestClient(app_for(release_path, expose_routing_headers=True)) as client:
        r = chat(client)
        assert 0 < float(r.headers["x-fedrouter-score"]) <= 1 and r.headers["x-fedrouter-routing"] == "global"


def test_api_keys_are_required_when_configured(release_path):
    with TestClient(app_for(release_path, api_keys=json.dumps(KEYS))) as client:
        for r in (
            chat(client),
            chat(client, key="sk-wrong"),
            chat(client, headers={"authorization": "sk-open"}),  # no Bearer
            client.get("/v1/models"),
            client.get("/v1/models/geo"),
            client.post("/v1/completions", json={"model": "math", "prompt": "x"}),
        ):
            assert r.status_code == 401, r.text
            assert (
                r.json()["error"]["code"] == "invalid_api_key" and r.json()["error"]["type"] == "authentication_error"
            )
        assert chat(client, key="sk-open").status_code == 200
        assert chat(client, headers={"authorization": "bearer sk-open"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_the_key_names_the_client_and_nothing_else_does(release_path):
    settings = {"api_keys": json.dumps(KEYS), "expose_routing_headers": True}
    with TestClient(app_for(release_path, **settings)) as client:
        r = chat(client, key="sk-a")  # hospital-a trained only the math cluster
        assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("math", "local")
        for probe in ("hospital-a", "hospital-b", "nobody"):  # a key without a client learns nothing
            r = chat(client, key="sk-open", headers={"x-fedrouter-client": probe}, user=probe)
            assert (r.headers["x-fedrouter-adapter"], r.headers["x-fedrouter-routing"]) == ("geo", "global")
        r = chat(client, key="sk-a", headers={"x-fedrouter-client": "hospital-b"})  # the key wins
        assert r.headers["x-fedrouter-adapter"] == "math"


def test_a_key_restricted_to_adapters(release_path):
    with TestClient(app_for(release_path, api_keys=json.dumps(KEYS))) as client:
        assert [
            m["id"] for m in client.get("/v1/models", headers={"authorization": "Bearer sk-geo"}).json()["data"]
        ] == [
            "auto",
            "base",
            "geo",
            "sentiment",
        ]
        r = chat(client, "math", key="sk-geo")
        assert r.status_code == 404 and "math" not in r.json()["error"]["message"].split("available:")[1]
        assert client.get("/v1/models/math", headers={"authorization": "Bearer sk-geo"}).status_code == 404
        assert chat(client, "geo", key="sk-geo").status_code == 200
        # auto among its adapters only: a geo question from a math-only key goes to math
        assert chat(client, key="sk-math-only").headers["x-fedrouter-adapter"] == "math"
        assert chat(client, key="sk-geo").headers["x-fedrouter-adapter"] == "geo"


def test_auto_stays_open_to_a_key_with_no_adapter_to_route_to(release_path):
    """A key with an empty adapter list, or whose client trained none of its adapters: `auto`
    answers from the base model (as the README says: auto and the base stay open), and never
    404 "model 'auto' does not exist; available: auto, base"."""
    keys = {"sk-none": {"adapters": []}, "sk-a-geo": {"client": "hospital-a", "adapters": ["geo"]}}
    with TestClient(app_for(release_path, api_keys=json.dumps(keys))) as client:
        for key in keys:
            r = chat(client, key=key)
            assert r.status_code == 200 and r.headers["x-fedrouter-adapter"] == "base", r.text
            assert r.json()["model"] == "base"


def test_metrics_need_a_key_that_sees_every_adapter(release_path):
    """/metrics labels requests by adapter: with keys configured, reading it without a key told
    anyone every adapter's name (and each one's traffic), and a key restricted to geo learnt math."""
    with TestClient(app_for(release_path, api_keys=json.dumps(KEYS))) as client:
        assert chat(client, "math", key="sk-open").status_code == 200
        for key in (None, "sk-wrong", "sk-geo"):
            r = client.get("/metrics", headers={"authorization": f"Bearer {key}"} if key else {})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert "math" not in r.text
        r = client.get("/metrics", headers={"authorization": "Bearer sk-open"})
        assert r.status_code == 200 and 'adapter="math"' in r.text
    with TestClient(app_for(release_path)) as client:  # no keys: open, as before
        assert client.get("/metrics").status_code == 200


def test_a_bad_key_file_is_refused_at_start(release_path, tmp_path):
    bad = tmp_path / "keys.json"
    for text, message in (
        ("[1]", "JSON object"),
        ('{"k": {"adapters": "math"}}', "list of adapter names"),
        ("{", "JSON"),
        ('{"sk-\u00e9": {}}', "printable ASCII"),  # never matched: HTTP headers are bytes, read as latin-1
        ('{"sk a": {}}', "printable ASCII"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            app_for(release_path, api_keys_file=bad)


def _slow_body(port: int, declared: int, sent: int = 10) -> socket.socket:
    """A connection that declares a body of `declared` bytes and sends `sent` of them."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
    s.sendall(b"content-length: %d\r\n\r\n" % declared + b'{"model": "' + b"x" * (sent - 11))
    return s


def test_bodies_being_read_share_one_byte_budget(release_path):
    """Two bodies of 40 kB on their way (39 kB of each received) fill a 100 kB budget: the next
    one is refused at once (429, OpenAI-shaped, Retry-After), a small one still passes; once they
    leave, it passes."""
    app = app_for(release_path, body_budget_bytes=100_000, max_body_bytes=64 * 1024, body_timeout_s=60)
    port = free_port()
    big = {"model": "math", "messages": [{"role": "user", "content": "x" * 30_000}]}
    with Live(app, port) as live:
        slow = [_slow_body(port, 40_000, sent=39_000) for _ in range(2)]
        try:
            deadline = time.monotonic() + 30
            while (r := httpx.post(f"{live.url}/v1/chat/completions", json=big)).status_code == 200:
                assert time.monotonic() < deadline, "the slow bodies never took their share"
                time.sleep(0.05)
            assert r.status_code == 429 and r.json()["error"]["code"] == "server_busy" and r.headers["retry-after"]
            assert httpx.post(f"{live.url}/v1/chat/completions", json={"model": "math", "messages": GEO}).is_success
        finally:
            for s in slow:
                s.close()
        deadline = time.monotonic() + 30
        while httpx.post(f"{live.url}/v1/chat/completions", json=big).status_code != 200:
            assert time.monotonic() < deadline, "the budget was not given back"
            time.sleep(0.05)


def test_the_budget_counts_bytes_received_not_bytes_promised():
    """Content-Length is a promise, not memory: counted up front, a few connections that declare
    the largest body and send nothing refused every other request (429) for as long as they kept
    reconnecting, at no cost to them. The budget holds what has arrived, and gives it back."""

    async def main() -> None:
        budget, waiting = BodyBudget(100_000), asyncio.Event()
        messages = [{"type": "http.request", "body": b'{"model": ', "more_body": True}]

        async def receive():
            if messages:
                return messages.pop(0)
            waiting.set()  # the rest of the promised body never comes
            await asyncio.Event().wait()

        scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"60000")]}
        reading = asyncio.ensure_future(read_json(Request(scope, receive), 64 * 1024, 60.0, budget))
        await waiting.wait()
        assert budget.used == 10
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert budget.used == 0

    asyncio.run(main())


def test_connections_are_bounded_by_the_setting(release_path):
    settings = GatewaySettings(
        release=release_path, backends=["http://fake-vllm"], max_connections=4, port=free_port(), host="127.0.0.1"
    )
    options = server_options(settings)
    assert options["limit_concurrency"] == 4
    app = create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(FakeVLLM()))
    live = Live(app, settings.port)
    live.server = uvicorn.Server(uvicorn.Config(app, **{**options, "log_level": "warning"}))
    live.thread = type(live.thread)(target=live.server.run, daemon=True)
    with live:
        assert httpx.get(f"{live.url}/health").status_code == 200
        idle = [socket.create_connection(("127.0.0.1", settings.port)) for _ in range(4)]
        try:
            deadline = time.monotonic() + 30
            while (r := httpx.get(f"{live.url}/health")).status_code == 200:  # until the server saw them all
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert r.status_code == 503
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 30
        while httpx.get(f"{live.url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_serve_flags_reach_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDROUTER_API_KEYS", raising=False)
    keys = tmp_path / "keys.json"
    argv = ["serve", "--release", "r", "--api-keys-file", str(keys), "--max-connections", "7"]
    s = settings_from(build_parser().parse_args([*argv, "--expose-routing-headers", "--trust-client-header"]))
    assert (s.api_keys_file, s.max_connections, s.expose_routing_headers, s.trust_client_header) == (
        keys,
        7,
        True,
        True,
    )
    s = settings_from(build_parser().parse_args(["serve", "--release", "r"]))
    assert (s.api_keys_file, s.expose_routing_headers, s.trust_client_header) == (None, False, False)
    assert server_options(s)["limit_concurrency"] == s.max_connections == 2048


class KeyChangedVLLM(FakeVLLM):
    """vLLM that refuses the gateway's key on generation (attached with another key, restarted)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/v1/chat/completions", "/v1/completions"):
            status = 403 if b'"stream":true' in request.content else 401
            return httpx.Response(status, json={"error": "Unauthorized"})
        return super().__call__(request)


def test_vllm_refusing_the_gateways_key_is_the_gateways_503(release_path):
    """A 401/403 from vLLM is about the gateway's own key, never the client's: passed on, it told
    an OpenAI client its (valid) API key was wrong (the SDK's AuthenticationError, no retry)."""
    with TestClient(app_for(release_path, KeyChangedVLLM(), api_keys=json.dumps(KEYS))) as client:
        for r in (chat(client, "math", key="sk-open"), chat(client, "math", key="sk-open", stream=True)):
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.json()["error"]["code"] == "backend_unavailable" and "Unauthorized" not in r.text


def test_log_lines_about_a_failed_request_name_its_id(release_path, caplog):
    vllm = FakeVLLM()
    with TestClient(app_for(release_path, vllm)) as client:
        vllm.down = True
        r = chat(client, "math", headers={"x-request-id": "trace-42"})
        assert r.status_code == 503 and r.headers["x-request-id"] == "trace-42"
    assert any("trace-42" in rec.getMessage() and rec.levelname == "WARNING" for rec in caplog.records)
