"""The vLLM side: an HTTP client for one OpenAI server and a pool of replicas.

Requests for an adapter go to a replica that already holds it (policy "affinity", serving/affinity.py:
consistent hashing with bounded load), other requests to the healthy replica with the fewest in
flight (policy "least-loaded" does that for every request). A request whose replica
refused the connection or died before answering is sent again, to another replica or, while all
are down, to the first that comes back within `connect_retry_s`: a backend restart loses nothing.
Non-streaming answers are read whole inside the retry; a stream is retried only until its
headers arrive, since after that the client has seen part of it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from fedrouter.serving.affinity import AffinityRing
from fedrouter.serving.errors import BackendUnavailable

# Failures before any byte of the answer reached the client: the request was not delivered, or
# its replica died before answering. Inference has no side effects, so sending it again is safe.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass
class Backend:
    url: str
    client: httpx.AsyncClient
    inflight: int = 0
    healthy: bool = True
    served: set[str] = field(default_factory=set)  # model names this replica serves


class BackendPool:
    def __init__(
        self,
        urls: list[str],
        *,
        request_timeout_s: float = 600.0,
        connect_retry_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests inject a fake vLLM here
        policy: str = "least-loaded",  # or "affinity"
        load_factor: float = 1.25,  # affinity: most in flight on a replica, as a multiple of the mean
    ):
        if not urls:
            raise ValueError("at least one backend URL is needed")
        timeout = httpx.Timeout(request_timeout_s, connect=5.0)
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        self.backends = [
            Backend(
                u.rstrip("/"),
                httpx.AsyncClient(base_url=u.rstrip("/"), timeout=timeout, limits=limits, transport=transport),
            )
            for u in urls
        ]
        self._connect_retry_s = connect_retry_s
        self._rr = itertools.count()
        if policy not in ("least-loaded", "affinity"):
            raise ValueError(f"unknown replica policy {policy!r} (least-loaded, affinity)")
        self._ring = (
            AffinityRing([b.url for b in self.backends], load_factor=load_factor) if policy == "affinity" else None
        )
        self.on_error = lambda backend: None  # metrics hook
        self.on_pick = lambda backend, placement: None  # metrics hook: placement home | spill | least-loaded

    def _pick(self, exclude: set[str], model: str | None = None) -> Backend | None:
        candidates = [b for b in self.backends if b.url not in exclude and b.healthy] or [
            b for b in self.backends if b.url not in exclude
        ]
        if not candidates:
            return None
        if self._ring is not None:
            by_url = {b.url: b for b in candidates}
            key = model if model and "@" in model else None  # adapters are name@release; else the base model
            url, home = self._ring.choose(key, {u: b.inflight for u, b in by_url.items()})
            self.on_pick(url, "home" if home else "spill" if key else "least-loaded")
            return by_url[url]
        turn = next(self._rr)  # round-robin among equally loaded replicas
        pick = min(candidates, key=lambda b: (b.inflight, (self.backends.index(b) - turn) % len(self.backends)))
        self.on_pick(pick.url, "least-loaded")
        return pick

    @asynccontextmanager
    async def _deliver(self, send, model: str | None = None) -> AsyncIterator[httpx.Response]:
        """Run `send(backend)` on a replica that accepts the connection; retry undelivered requests."""
        deadline = time.monotonic() + self._connect_retry_s
        tried: set[str] = set()
        last_error: Exception | None = None
        while True:
            backend = self._pick(tried, model)
            if backend is None:
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(f"no vLLM backend is reachable ({last_error})")
                await asyncio.sleep(0.25)
                tried.clear()
                continue
            backend.inflight += 1
            try:
                try:
                    response = await send(backend.client)
                except _RETRYABLE as e:
                    backend.healthy = False
                    self.on_error(backend.url)
                    tried.add(backend.url)
                    last_error = e
                    continue
                except httpx.HTTPError as e:
                    self.on_error(backend.url)
                    raise BackendUnavailable(f"vLLM backend {backend.url} failed: {type(e).__name__}") from e
                backend.healthy = True
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            finally:
                backend.inflight -= 1

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        stream: bool = False,
        model: str | None = None,
    ):
        """A response from some replica, usable inside the `async with` (streamed if asked). `model` (the
        vLLM model name, default `body["model"]`) chooses the replica under the affinity policy."""

        async def send(client: httpx.AsyncClient) -> httpx.Response:
            req = client.build_request(method, path, json=body)
            return await client.send(req, stream=stream)

        if model is None and isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
        async with self._deliver(send, model) as response:
            yield response

    async def each(self, method: str, path: str, body: dict[str, Any] | None = None) -> list[httpx.Response]:
        """Send to every replica (adapter registration); raises BackendUnavailable if one is down."""
        out = []
        for b in self.backends:
            try:
                out.append(await b.client.request(method, path, json=body))
            except httpx.HTTPError as e:
                self.on_error(b.url)
                raise BackendUnavailable(f"vLLM backend {b.url} is unreachable: {type(e).__name__}") from e
        return out

    async def refresh(self) -> None:
        """Ask every replica what it serves and whether it is up."""
        for b in self.backends:
            try:
                r = await b.client.get("/v1/models", timeout=5.0)
                r.raise_for_status()
                b.served = {m["id"] for m in r.json().get("data", [])}
                b.healthy = True
            except (httpx.HTTPError, ValueError, KeyError):
                b.healthy = False
        if self._ring is not None:  # balance the homes of the adapters the replicas serve
            self._ring.set_keys({n for b in self.backends for n in b.served if "@" in n})

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh()
            if all(b.healthy for b in self.backends):
                return
            if time.monotonic() > deadline:
                down = [b.url for b in self.backends if not b.healthy]
                raise BackendUnavailable(f"vLLM backends not ready after {timeout_s:.0f} s: {down}")
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        for b in self.backends:
            await b.client.aclose()
