"""Only the gateway reaches the engine: the supervised vLLM's private Unix socket (a stand-in server
on it here; the real vLLM in tests/integration/test_gateway_vllm.py), and attach mode's refusal to
start in front of a vLLM whose unguarded routes answer strangers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

import pytest
from aiohttp import web
from fastapi.testclient import TestClient

from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.app import create_app
from fedrouter.serving.attach_check import OpenBackend, check_attached
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.supervisor import VLLMSupervisor, vllm_command
from tests.engine_access import as_stranger
from tests.unit.test_gateway import make_release

SETTINGS = GatewaySettings()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_like(key: str | None = "k") -> web.Application:
    """vLLM 0.32's surface as far as access goes: /v1 behind the key, /adapters, /invocations and
    /metrics open to anyone."""

    async def v1(request: web.Request) -> web.Response:
        if key and request.headers.get("authorization") != f"Bearer {key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "base", "parent": None}]})
        return web.json_response({"model": "base", "choices": [{"text": "ok"}]})

    async def invalid(request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid body"}, status=400)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_running 0\n")

    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", v1)
    app.router.add_post("/adapters", invalid)
    app.router.add_post("/invocations", invalid)
    app.router.add_post("/tokenize", invalid)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(app: web.Application, *, uds: str | None = None, port: int | None = None) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, uds) if uds else web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner


def test_the_supervised_socket_admits_the_gateway_and_no_one_else(tmp_path):
    sup = VLLMSupervisor(None, [], 1, tmp_path / "log", "k")
    port = free_port()

    async def main():
        on_socket = await serve(vllm_like(), uds=str(sup.socket))
        on_port = await serve(vllm_like(), port=port)
        pool = BackendPool([sup.url], SETTINGS, api_key="k")  # the gateway's own clients: aiohttp and httpx
        try:
            async with pool.request("POST", "/v1/completions", b'{"model":"base"}') as r:
                assert r.status_code == 200 and b'"ok"' in await r.aread()
            await pool.refresh()  # httpx, over the same socket
            assert pool.backends[0].healthy and pool.backends[0].served == {"base"}
            stranger_socket = await asyncio.to_thread(as_stranger, {"uds": str(sup.socket)})
            stranger_port = await asyncio.to_thread(as_stranger, {"port": port})
        finally:
            await pool.close()
            await on_socket.cleanup()
            await on_port.cleanup()
        return stranger_socket, stranger_port

    stranger_socket, stranger_port = asyncio.run(main())
    assert all(str(r).startswith("refused") for r in stranger_socket), stranger_socket
    # the same server on a TCP port: the stranger loads, generates and reads (the hole closed above)
    assert stranger_port == [400, 400, 200, 401]
    sup.close()


def test_vllm_is_started_on_the_socket_without_a_tcp_port(tmp_path, fake_adapters):
    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    sup = VLLMSupervisor(None, ["--max-model-len", "512"], 1, tmp_path / "log", "k")
    cmd = vllm_command(release, sup._listen, ["--max-model-len", "512"])
    assert cmd[cmd.index("--uds") + 1] == str(sup.socket)
    assert "--port" not in cmd and "--host" not in cmd
    assert (os.stat(sup.socket.parent).st_mode & 0o777) == 0o700 and sup.socket.parent.stat().st_uid == os.geteuid()
    sup.close()


def test_the_supervised_vllm_bounds_requests_that_name_no_max_tokens(tmp_path, fake_adapters):
    """vLLM lets a chat request without `max_tokens` run to the model's context: the gateway's
    n × max_tokens cap counts such a request as `max_tokens`, so vLLM must stop there too."""
    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    cmd = vllm_command(release, ["--uds", "s"], [], max_new_tokens=4096)
    assert json.loads(cmd[cmd.index("--override-generation-config") + 1]) == {"max_new_tokens": 4096}
    theirs = ["--override-generation-config", '{"temperature": 0.5}']
    cmd = vllm_command(release, ["--uds", "s"], theirs, max_new_tokens=4096)
    assert cmd.count("--override-generation-config") == 1 and cmd[-2:] == theirs  # the operator's wins


def test_attach_mode_refuses_a_vllm_whose_unguarded_routes_answer(tmp_path, fake_adapters, caplog):
    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def check(allow_open: bool) -> None:
        runner = await serve(vllm_like(), port=port)
        pool = BackendPool([url], SETTINGS)
        try:
            await check_attached(pool.backends, allow_open)
        finally:
            await pool.close()
            await runner.cleanup()

    with pytest.raises(OpenBackend) as e:
        asyncio.run(check(False))
    for route in ("POST /adapters (400)", "POST /invocations (400)", "GET /metrics (200)"):
        assert route in str(e.value)
    assert "/v1/models" not in str(e.value)  # behind the key: closed
    with caplog.at_level(logging.WARNING, "fedrouter.serving"):
        asyncio.run(check(True))
    assert "SECURITY" in caplog.text and "POST /adapters" in caplog.text

    # the whole gateway: its start fails, saying what to close
    async def gateway_start() -> None:
        runner = await serve(vllm_like(), port=port)
        try:
            settings = GatewaySettings(release=release.path, backends=[url], vllm_api_key="k")
            app = create_app(settings, embedder=HashEmbedder(256))
            await asyncio.to_thread(lambda: TestClient(app).__enter__())
        finally:
            await runner.cleanup()

    with pytest.raises(OpenBackend, match="FEDROUTER_ALLOW_OPEN_BACKEND"):
        asyncio.run(gateway_start())


def test_attach_mode_accepts_closed_servers_and_private_sockets(tmp_path):
    closed = web.Application()  # a proxy in front of vLLM that lets only /v1 (with the key) through
    port = free_port()
    private = VLLMSupervisor(None, [], 1, tmp_path / "log", "k")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    shared_socket = shared / "vllm.sock"

    async def main() -> None:
        runners = [
            await serve(closed, port=port),
            await serve(vllm_like(), uds=str(private.socket)),
            await serve(vllm_like(), uds=str(shared_socket)),
        ]
        os.chmod(shared_socket, 0o777)
        pool = BackendPool([f"http://127.0.0.1:{port}", private.url], SETTINGS)
        try:
            await check_attached(pool.backends, allow_open=False)
            open_pool = BackendPool([f"unix:{shared_socket}"], SETTINGS)
            with pytest.raises(OpenBackend, match="other users may connect"):
                await check_attached(open_pool.backends, allow_open=False)
            await open_pool.close()
        finally:
            await pool.close()
            for r in runners:
                await r.cleanup()

    asyncio.run(main())
    private.close()
