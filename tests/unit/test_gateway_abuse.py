"""The gateway as a careless client, an attacker and an operator would use it: the real app on a
real HTTP server (uvicorn, in a thread) in front of a fake vLLM. Every case must be answered
below 500, without hanging, leaving /health at 200 and the keep-alive connection usable."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.settings import GatewaySettings
from tests.unit.test_gateway import FakeVLLM, make_release

pytestmark = pytest.mark.timeout(120)
TOKEN = "admin-secret"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
USER = [{"role": "user", "content": "What is the capital of Italy?"}]


class SlowFakeVLLM(FakeVLLM):
    """FakeVLLM whose `max_tokens: 999` requests take long, and which records their cancellation."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.cancelled = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/c") and json.loads(request.content).get("max_tokens") == 999:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return super().__call__(request)


class PoisonableEmbedder(HashEmbedder):
    """Fails a whole batch when one text in it contains POISON (as a tokenizer may on bad text)."""

    def embed(self, texts):
        time.sleep(0.02)  # long enough for concurrent requests to share a batch
        if any("POISON" in t for t in texts):
            raise ValueError("cannot tokenize")
        return super().embed(texts)


class Live:
    def __init__(self, app, port: int):
        self.app, self.url = app, f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Live:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "gateway did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from tests.conftest import fake_adapter

    root = tmp_path_factory.mktemp("abuse")
    adapters = {n: fake_adapter(root / "src" / n, seed=i) for i, n in enumerate(("math", "geo", "sentiment"))}
    release = make_release(root / "releases" / "v1", adapters)
    vllm = SlowFakeVLLM(key="k")
    settings = GatewaySettings(
        release=release.path,
        backends=["http://fake-vllm"],
        vllm_api_key="k",
        connect_retry_s=0.2,
        admin_token=TOKEN,
        max_body_bytes=64 * 1024,
        body_timeout_s=2.0,
        max_inflight=32,
    )
    app = create_app(settings, embedder=PoisonableEmbedder(256), transport=httpx.MockTransport(vllm))
    with Live(app, free_port()) as server:
        server.vllm, server.root, server.adapters = vllm, root, adapters
        yield server


def _nested(depth: int) -> str:
    return (
        '{"model": "math", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": '
        + '{"a": ' * depth
        + "1"
        + "}" * depth
        + "}}]}"
    )


CHAT = "/v1/chat/completions"


def raw(model: str, field: str) -> str:
    """A chat body with one field written as raw JSON text (to send what json.dumps cannot)."""
    return '{"model": "' + model + '", "messages": ' + json.dumps(USER) + ", " + field + "}"


CASES = [  # (name, path, raw body, expected status)
    ("nan", CHAT, raw("math", '"temperature": NaN'), 400),
    ("infinity", CHAT, raw("auto", '"top_p": Infinity'), 400),
    ("1e999", CHAT, raw("base", '"temperature": 1e999'), 400),
    ("huge int", CHAT, raw("math", '"max_tokens": 1' + "0" * 5000), 400),
    ("int above the cap", CHAT, raw("math", '"max_tokens": 10000000000'), 400),
    ("seed too big", CHAT, raw("math", '"seed": 1' + "0" * 30), 400),
    ("deep nesting", CHAT, "[" * 5000 + "]" * 5000, 400),
    ("nesting in tool parameters", CHAT, _nested(200), 400),
    ("lone surrogate auto", CHAT, '{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}', 400),
    ("lone surrogate adapter", CHAT, '{"model": "math", "messages": [{"role": "user", "content": "a\\udfff"}]}', 400),
    ("invalid utf-8", CHAT, b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
    (
        "text part not a string (auto)",
        CHAT,
        json.dumps({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 123}]}]}),
        400,
    ),
    (
        "text part not a string (adapter)",
        CHAT,
        json.dumps({"model": "math", "messages": [{"role": "user", "content": [{"type": "text", "text": 123}]}]}),
        400,
    ),
    ("content a number", CHAT, json.dumps({"model": "math", "messages": [{"role": "user", "content": 5}]}), 400),
    ("role a number", CHAT, json.dumps({"model": "auto", "messages": [{"role": 5, "content": "x"}]}), 400),
    ("stream as a string", CHAT, json.dumps({"model": "math", "messages": USER, "stream": "false"}), 400),
    ("n=1000", CHAT, json.dumps({"model": "math", "messages": USER, "n": 1000}), 400),
    (
        "top_logprobs=100",
        CHAT,
        json.dumps({"model": "math", "messages": USER, "logprobs": True, "top_logprobs": 100}),
        400,
    ),
    ("logprobs=100", "/v1/completions", json.dumps({"model": "math", "prompt": "x", "logprobs": 100}), 400),
    ("model not a string", CHAT, json.dumps({"model": 5, "messages": USER}), 400),
    ("model 5000 chars", CHAT, json.dumps({"model": "m" * 5000, "messages": USER}), 400),
    ("model is a path", CHAT, json.dumps({"model": "/etc/passwd", "messages": USER}), 404),
    ("vLLM-side name", CHAT, json.dumps({"model": "math@v1", "messages": USER}), 404),
    ("empty body", CHAT, b"", 400),
    ("array body", CHAT, b"[]", 400),
    ("null body", CHAT, b"null", 400),
    ("token ids with auto", "/v1/completions", json.dumps({"model": "auto", "prompt": [1, 2, 3]}), 400),
    ("empty prompt list", "/v1/completions", json.dumps({"model": "math", "prompt": []}), 400),
    ("negative token id", "/v1/completions", json.dumps({"model": "math", "prompt": [-1]}), 400),
    (
        "body too large",
        CHAT,
        json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 100000}]}),
        413,
    ),
]


@pytest.mark.parametrize("name, path, body, status", CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_a_4xx_and_leave_the_gateway_up(live, name, path, body, status):
    with httpx.Client(base_url=live.url, timeout=20) as client:
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["message"] and err["type"] and isinstance(err["code"], str)
        assert "Traceback" not in r.text and "fake-vllm" not in r.text
        # the same keep-alive connection still serves a valid request
        ok = client.post(CHAT, json={"model": "auto", "messages": USER})
        assert ok.status_code == 200, ok.text
        assert client.get("/health").status_code == 200


# Once refused here, accepted now because vLLM accepts them (tests/integration/test_gateway_compat.py
# shows it on a real vLLM): a message without content, a custom role, a field the gateway does not know.
ACCEPTED = [
    ("no content (adapter)", {"model": "math", "messages": [{"role": "user"}, *USER]}),
    ("no content (base)", {"model": "base", "messages": [{"role": "user"}, *USER]}),
    ("role wizard (adapter)", {"model": "geo", "messages": [{"role": "wizard", "content": "x"}]}),
    ("role wizard (auto)", {"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}),
    ("unknown field", {"model": "math", "messages": USER, "frobnicate": {"a": [1]}}),
]


@pytest.mark.parametrize("name, body", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_what_vllm_accepts_is_forwarded_as_sent(live, name, body):
    r = httpx.post(f"{live.url}{CHAT}", json=body, timeout=20)
    assert r.status_code == 200, r.text
    assert {k: v for k, v in live.vllm.requests[-1].items() if k != "model"} == {
        k: v for k, v in body.items() if k != "model"
    }


ADMIN_CASES = [
    ("5000-char path", {"release": "/" + "x" * 5000}, 400),
    ("path with NUL", {"release": "/tmp/a\0b"}, 400),
    ("path is a number", {"release": 5}, 400),
    ("path that does not exist", {"release": "/nonexistent/v9"}, 400),
]


@pytest.mark.parametrize("name, body, status", ADMIN_CASES, ids=[c[0] for c in ADMIN_CASES])
def test_bad_admin_requests_get_a_4xx(live, name, body, status):
    r = httpx.post(f"{live.url}/admin/reload", json=body, headers=ADMIN, timeout=20)
    assert r.status_code == status, r.text
    assert httpx.get(f"{live.url}/health").status_code == 200


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: (p / "adapters" / "geo" / "adapter_config.json").write_bytes(b'{"r": "\xff"}'), "not valid UTF-8"),
        (lambda p: _edit(p, lambda m: m["embedder"].update(dim="x")), "embedder.dim must be int"),
        (lambda p: _edit(p, lambda m: m.update(clusters=[{"id": "a"}])), "clusters[0].id must be int"),
        (lambda p: _truncate(p / "adapters" / "math" / "adapter_model.safetensors"), "truncated"),
    ],
)
def test_broken_releases_are_refused_with_the_reason(live, tmp_path, corrupt, message):
    release = make_release(tmp_path / "v2", live.adapters)
    corrupt(release.path)
    r = httpx.post(f"{live.url}/admin/reload", json={"release": str(release.path)}, headers=ADMIN, timeout=20)
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


def _edit(path, change):
    m = json.loads((path / "manifest.json").read_text())
    change(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _truncate(file):
    file.write_bytes(file.read_bytes()[:-7])


def test_internals_are_not_visible_without_the_token(live):
    unknown = httpx.get(f"{live.url}/nothing-here")
    for path in ("/docs", "/redoc", "/openapi.json", "/admin/openapi.json", "/admin/health", "/admin/release"):
        for method in ("GET", "POST", "PUT"):
            r = httpx.request(method, f"{live.url}{path}", headers={"authorization": "Bearer wrong"})
            assert (r.status_code, r.text) == (unknown.status_code, unknown.text), (method, path)
    models = httpx.get(f"{live.url}/v1/models").text
    health = httpx.get(f"{live.url}/health").text
    metrics = httpx.get(f"{live.url}/metrics").text
    for secret in ("fake-vllm", str(live.root), "@"):
        assert secret not in models and secret not in health and secret not in metrics
    assert "/admin" not in json.dumps(live.app.state.openapi())
    assert httpx.get(f"{live.url}/admin/openapi.json", headers=ADMIN).json()["paths"]


def test_a_poisoned_prompt_fails_alone(live):
    """16 clients and one bad prompt in the same embedding micro-batches: only the bad one fails."""

    def send(text: str) -> int:
        r = httpx.post(f"{live.url}{CHAT}", json={"model": "auto", "messages": [{"role": "user", "content": text}]})
        return r.status_code

    results: dict[str, int] = {}
    threads = [
        threading.Thread(target=lambda t=t: results.__setitem__(t, send(t)))
        for t in [f"What is the capital of country {i}?" for i in range(16)] + ["POISON prompt"]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results.pop("POISON prompt") == 503
    assert set(results.values()) == {200} and len(results) == 16


def test_slow_clients_do_not_take_the_slots(live):
    """More slow-body clients than in-flight slots (32): a normal request still gets through, and
    the slow ones get 408 when their time is up."""
    body = json.dumps({"model": "math", "messages": USER}).encode()
    slow = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
        s.sendall(b"content-length: %d\r\n\r\n" % len(body) + body[:5])
        slow.append(s)
    try:
        r = httpx.post(f"{live.url}{CHAT}", json={"model": "math", "messages": USER}, timeout=10)
        assert r.status_code == 200, r.text
        s = slow[0]
        s.settimeout(10)
        assert s.recv(200).startswith(b"HTTP/1.1 408")
    finally:
        for s in slow:
            s.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_cancels_its_generation(live, stream):
    before = live.vllm.cancelled
    body = json.dumps({"model": "math", "prompt": "x", "max_tokens": 999, "stream": stream}).encode()
    s = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
    s.sendall(b"content-length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.5)  # forwarded and waiting on vLLM
    s.close()
    deadline = time.monotonic() + 10
    while live.vllm.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.vllm.cancelled == before + 1
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'status="499"' in metrics and "fedrouter_inflight_requests 0.0" in metrics


def test_429_and_503_carry_retry_after(live):
    live.vllm.down = True
    try:
        r = httpx.post(f"{live.url}{CHAT}", json={"model": "math", "messages": USER})
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    finally:
        live.vllm.down = False


def test_fuzzed_requests_never_get_a_5xx(live):
    """schemathesis over the gateway's OpenAPI schema, valid and invalid bodies, bounded examples."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(live.app.state.openapi())
    seen = []
    for path, method in ((CHAT, "POST"), ("/v1/completions", "POST"), ("/v1/models/{model_id}", "GET")):
        operation = schema[path][method]
        modes = (GenerationMode.POSITIVE,) if method == "GET" else (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for mode in modes:  # (any string is a valid model id: no negative case exists for the GET)

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case):
                r = case.call(base_url=live.url, timeout=20)
                seen.append(r.status_code)
                assert r.status_code < 500, (case.body, r.text[:300])

            run()
    assert seen and httpx.get(f"{live.url}/health").status_code == 200
