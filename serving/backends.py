"""The vLLM side: one client (one persistent connection pool) per OpenAI server, the pool of
replicas, and the LoRA adapters registered in them.

Choice. Requests for an adapter go to a replica that already holds it (policy "affinity",
serving/affinity.py: consistent hashing with bounded load); other requests, and every request under
policy "least-loaded", go to the replica with the fewest in flight.

Delivery. A request goes to the replica `_choose` picks among the healthy ones that serve its
model (a replica that refused a connection serves nothing until it lists its models again and the
keeper has registered the adapters it lacks). It is sent again, to another replica, only when it was
never delivered: the connection was refused or could not be opened. Once a replica accepted it, any
failure is a 503 for that request (Retry-After): it may have been processed, and sending it again
would generate twice (a request that crashes vLLM would crash every replica in turn). While every
replica refuses connections, a request waits up to `connect_retry_s` for one to come back (a
supervised restart).

Transport. Generation requests go over serving/transport.py (aiohttp, one pool per replica, its
errors raised as httpx's); admin calls use httpx, and so does everything when a test injects an
httpx transport (a fake vLLM).

Addresses. A replica is `http(s)://HOST:PORT` or `unix:PATH` (a Unix socket: the supervised vLLM's,
serving/supervisor.py); both transports speak HTTP over either.

Loading adapters into the replicas is serving/loader.py's job, not this request path's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from fedrouter.serving.affinity import AffinityRing
from fedrouter.serving.errors import BackendUnavailable
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.supervisor import unix_socket
from fedrouter.serving.transport import AioResponse, HotTransport

log = logging.getLogger("fedrouter.serving")
# Failures before the request reached any replica: sending it elsewhere cannot duplicate work.
_UNDELIVERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_JSON = {"content-type": "application/json"}
_RETRY = "the model backend is not available; retry shortly"


@dataclass
class Backend:
    url: str
    client: httpx.AsyncClient  # admin calls (models, adapter loading)
    transport: httpx.AsyncBaseTransport  # the same connection pool, used directly on the hot path
    inflight: int = 0
    healthy: bool = True
    served: set[str] = field(default_factory=set)  # model names this replica serves
    roots: set[str] = field(default_factory=set)  # of those, the base models (`parent` null)
    hot: HotTransport | None = None  # the generation requests' pool (aiohttp)
    base: str = ""  # what requests are addressed to: the URL, or http://vllm over a Unix socket


class BackendPool:
    def __init__(
        self,
        urls: list[str],
        settings: GatewaySettings,  # request_timeout_s, connect_retry_s, replica_policy, affinity_*
        *,
        api_key: str | None = None,  # sent as a bearer token (vLLM --api-key / VLLM_API_KEY)
        transport: httpx.AsyncBaseTransport | None = None,  # tests inject a fake vLLM here
    ):
        request_timeout_s, policy = settings.request_timeout_s, settings.replica_policy
        if not urls:
            raise ValueError("at least one backend URL is needed")
        timeout = httpx.Timeout(request_timeout_s, connect=5.0)
        self._timeout = timeout.as_dict()
        hot = transport is None  # aiohttp for generation requests, unless a test injects a transport
        # vLLM's server closes idle connections after 5 s: ours expire first, so that a request is
        # never written into a connection the server is closing (it could not be retried safely).
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=4.0)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = {**headers, **_JSON}
        self.backends = []
        for u in urls:
            u = u.rstrip("/")
            uds = unix_socket(u)
            base = "http://vllm" if uds else u  # over a socket, the host part is only a Host header
            t = transport or httpx.AsyncHTTPTransport(limits=limits, uds=uds)
            client = httpx.AsyncClient(base_url=base, timeout=timeout, headers=headers, transport=t)
            self.backends.append(Backend(u, client, t, base=base))
            if hot:  # timeouts as httpx's: connect, then between reads
                self.backends[-1].hot = HotTransport(base, self._headers, request_timeout_s, uds=uds)
        self._index = {b.url: i for i, b in enumerate(self.backends)}
        self._connect_retry_s = settings.connect_retry_s
        # route-only: the backend (a platform's gateway) need not list adapters in /v1/models, nor
        # answer it at all: any HTTP answer means up, and a request goes to any replica that is up
        self._route_only = settings.route_only
        self._rr = itertools.count()
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        if policy not in ("least-loaded", "affinity"):
            raise ValueError(f"unknown replica policy {policy!r} (least-loaded, affinity)")
        self._ring = (
            AffinityRing(
                [b.url for b in self.backends],
                load_factor=settings.affinity_load_factor,
                min_inflight=settings.affinity_min_inflight,
            )
            if policy == "affinity"
            else None
        )
        self.on_error = lambda backend: None  # metrics hook
        self.on_pick = lambda backend, placement: None  # metrics hook: placement home | spill | least-loaded

    def _choose(self, candidates: list[Backend], model: str | None) -> Backend:
        """The replica choice: the adapter's home under "affinity" (spilling past its load bound),
        else the fewest requests in flight, round-robin among equals."""
        if self._ring is not None:
            by_url = {b.url: b for b in candidates}
            key = model if model and "@" in model else None  # vLLM adapter names are name@digest
            url, home = self._ring.choose(key, {u: b.inflight for u, b in by_url.items()})
            self.on_pick(url, "home" if home else "spill" if key else "least-loaded")
            return by_url[url]
        turn = next(self._rr)
        n = len(self.backends)
        pick = min(candidates, key=lambda b: (b.inflight, (self._index[b.url] - turn) % n))
        self.on_pick(pick.url, "least-loaded")
        return pick

    def _candidates(self, exclude: set[str], model: str | None) -> list[Backend]:
        """Replicas known to serve `model` (healthy ones first). None while a replica that went
        down is back but not yet re-registered: the request then waits, as for a refused connection."""
        anywhere = model is None or self._route_only
        ok = [b for b in self.backends if b.url not in exclude and (anywhere or model in b.served)]
        return [b for b in ok if b.healthy] or ok

    @asynccontextmanager
    async def request(
        self, method: str, path: str, content: bytes | None = None, *, model: str | None = None
    ) -> AsyncIterator[httpx.Response | AioResponse]:
        """A response from some replica, usable inside the `async with` (streamed if asked).
        `content` is the JSON body, already serialised; `model` steers the replica choice. The
        response is streamed: read it inside the `async with`."""
        deadline = time.monotonic() + self._connect_retry_s
        tried: set[str] = set()
        last_error: Exception | None = None
        while True:
            candidates = self._candidates(tried, model)
            if not candidates:
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(_RETRY, f"no replica accepted a connection: {last_error!r}")
                await asyncio.sleep(0.25)
                tried.clear()
                continue
            backend = self._choose(candidates, model)
            backend.inflight += 1
            try:
                try:
                    response = await self._send(backend, method, path, content)
                except _UNDELIVERED as e:
                    backend.healthy = False
                    backend.served = set()  # unknown until it answers /v1/models again (a restart loses all)
                    self.on_error(backend.url)
                    tried.add(backend.url)
                    last_error = e
                    continue
                except httpx.HTTPError as e:
                    self.on_error(backend.url)
                    raise BackendUnavailable(
                        "the model backend failed while answering; retry", f"{backend.url}: {e!r}"
                    ) from None
                backend.healthy = True
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            finally:
                backend.inflight -= 1

    async def _send(
        self, backend: Backend, method: str, path: str, content: bytes | None
    ) -> httpx.Response | AioResponse:
        """Send one request to one replica; the response's body is read by the caller."""
        if backend.hot is None:  # the transport itself (httpx's client layer costs ~0.2 ms more and adds nothing)
            url = self._urls.get((backend.url, path)) or self._urls.setdefault(
                (backend.url, path), httpx.URL(backend.base + path)
            )  # parsed once
            request = httpx.Request(
                method, url, headers=self._headers, content=content, extensions={"timeout": self._timeout}
            )
            return await backend.transport.handle_async_request(request)
        assert backend.hot is not None
        return await backend.hot.send(method, path, content)

    async def refresh(self) -> None:
        """Ask every replica (concurrently) what it serves and whether it is up."""

        async def one(b: Backend) -> None:
            try:
                r = await b.client.get("/v1/models", timeout=5.0)
                if self._route_only and r.status_code < 500 and not r.is_success:
                    b.healthy = True  # it answers; what it serves is the platform's business
                    return
                r.raise_for_status()
                data = r.json()["data"]
                b.served = {m["id"] for m in data}
                b.roots = {m["id"] for m in data if m.get("parent") is None}
                b.healthy = True
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
                b.healthy = False

        await asyncio.gather(*(one(b) for b in self.backends))
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
                raise BackendUnavailable(_RETRY, f"vLLM backends not ready after {timeout_s:.0f} s: {down}")
            await asyncio.sleep(1.0)

    def base_model(self, wanted: str) -> str:
        """The vLLM name of the base model: read from /v1/models (the entry whose `parent` is null),
        whatever it is called and whatever static adapters the server also lists."""
        up = [b for b in self.backends if b.healthy] or self.backends
        roots = up[0].roots
        if wanted in roots or (self._route_only and not roots):  # route-only: the release's name
            return wanted
        if len(roots) == 1:
            (name,) = roots
            log.info("vLLM serves the base model as %r, the release calls it %r", name, wanted)
            return name
        raise BackendUnavailable(f"vLLM does not serve one base model named {wanted!r} (it serves {sorted(roots)})")

    async def close(self) -> None:
        for b in self.backends:
            await b.client.aclose()
            if b.hot is not None:
                await b.hot.close()
