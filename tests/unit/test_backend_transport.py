"""The hot path's own transport (aiohttp) against real HTTP servers on loopback: answers, long
streamed lines, a refused replica (never delivered: another one answers), a replica that dies half
way (delivered: 503, not sent again), a client that leaves (the backend connection is closed)."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from aiohttp import web

from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable
from fedrouter.serving.proxy import forward
from fedrouter.serving.registry import Target
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.transport import AioResponse

LONG = "x" * (3 * 2**20)  # one SSE line above aiohttp's line limit (twice its read buffer, 2 MiB before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.bodies: list[dict] = []
        self.aborted = asyncio.Event()
        self.auth: list[str | None] = []

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("authorization"))
        if body.get("cut"):  # answer half, then die
            r = web.StreamResponse(headers={"content-length": "1000", "content-type": "application/json"})
            await r.prepare(request)
            await r.write(b'{"model":')
            request.transport.close()
            return r
        if body.get("stream"):
            r = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await r.prepare(request)
            if body.get("cut"):  # one event, then the connection drops
                await r.write(f"data: {json.dumps({'model': body['model'], 'text': 'a'})}\n\n".encode())
                request.transport.close()
                return r
            try:
                for text in ("a", LONG, "b"):
                    await r.write(f"data: {json.dumps({'model': body['model'], 'text': text})}\n\n".encode())
                    await asyncio.sleep(0.05 if body.get("slow") else 0)
                await r.write(b"data: [DONE]\n\n")
            except (ConnectionResetError, asyncio.CancelledError):
                self.aborted.set()
                raise
            return r
        return web.json_response({"model": body["model"], "choices": [{"text": "ok"}]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"


async def _with_pool(urls: list[str], fn):
    pool = BackendPool(urls, GatewaySettings(connect_retry_s=0.5, replica_policy="least-loaded"), api_key="k")
    try:
        return await fn(pool)
    finally:
        await pool.close()


def _against_server(go, refused_first: bool = False) -> None:
    """Run `go(pool, server)` with a pool in front of a fresh Server (after a refused URL if asked)."""

    async def main():
        server = Server()
        url = await server.start()
        urls = [f"http://127.0.0.1:{free_port()}", url] if refused_first else [url]
        try:
            await _with_pool(urls, lambda pool: go(pool, server))
        finally:
            await server.runner.cleanup()

    asyncio.run(main())


def test_answers_and_streams_through_aiohttp():
    async def go(pool: BackendPool, server: Server):
        async with pool.request("POST", "/v1/completions", b'{"model":"m"}') as r:
            assert isinstance(r, AioResponse) and r.status_code == 200
            assert json.loads(await r.aread())["model"] == "m"
        async with pool.request("POST", "/v1/completions", b'{"model":"m","stream":true}') as r:
            lines = [line async for line in r.aiter_lines()]
        assert [json.loads(x[6:])["text"] for x in lines if x.startswith("data: {")] == ["a", LONG, "b"]
        assert lines[-2:] == ["data: [DONE]", ""]  # as httpx: empty lines kept (the SSE framing)
        assert server.auth == ["Bearer k", "Bearer k"]
        assert pool.backends[0].hot is not None and pool.backends[0].hot.open

    _against_server(go)


def test_a_refused_replica_is_skipped_and_a_dying_one_is_a_503():
    async def go(pool: BackendPool, server: Server):
        for _ in range(3):  # whichever replica is chosen first, the one listening answers
            async with pool.request("POST", "/v1/completions", b'{"model":"m"}') as r:
                assert json.loads(await r.aread())["model"] == "m"
        assert not pool.backends[0].healthy and pool.backends[1].healthy
        with pytest.raises(httpx.ReadError):
            async with pool.request("POST", "/v1/completions", b'{"model":"m","cut":true}') as r:
                await r.aread()
        assert len(server.bodies) == 4  # the cut request was delivered once, never sent again

    _against_server(go, refused_first=True)


def test_no_replica_listening_is_a_503_after_the_retry_window():
    async def go(pool: BackendPool):
        with pytest.raises(BackendUnavailable):
            async with pool.request("POST", "/v1/completions", b'{"model":"m"}'):
                pass

    asyncio.run(_with_pool([f"http://127.0.0.1:{free_port()}"], go))


def test_leaving_a_stream_early_closes_the_backend_connection():
    async def go(pool: BackendPool, server: Server):
        async with pool.request("POST", "/v1/completions", b'{"model":"m","stream":true,"slow":true}') as r:
            async for _ in r.aiter_lines():
                break  # the client went away after the first line
        await asyncio.wait_for(server.aborted.wait(), 5)  # the server saw the connection close

    _against_server(go)


def test_a_stream_cut_by_the_backend_ends_with_an_error_event_and_done():
    """An OpenAI client stops reading at `[DONE]`: without it a cut stream looks like a hang or a
    silent truncation; with it the client sees the error event and ends cleanly."""

    async def go(pool: BackendPool, server: Server):
        target = Target(public="math", backend="m", release_id="v1", route=None)
        pool.backends[0].served = {"m"}  # as /v1/models would list it
        response = await forward(pool, "/v1/completions", {"stream": True, "cut": True}, target, stream=True)
        events = [line async for line in response.body_iterator]
        text = b"".join(e if isinstance(e, bytes) else e.encode() for e in events).decode()
        data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert json.loads(data[-2])["error"]["type"] == "service_unavailable"
        assert data[-1] == "[DONE]" and response.relay_failed()

    _against_server(go)
