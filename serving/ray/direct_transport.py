"""The ingress's way to the engines through their doors (serving/ray/door.py), Ray's handle as the
fallback: RaySpec's `data_plane = "direct"`, the default.

The gateway code is the handle transport's (serving/ray/handle_transport.py): adapters registered
with this ingress, `/v1/models`, the payloads of adapters for nodes without the folder. Only the
generation requests differ: they go over HTTP (aiohttp, one keep-alive pool per door, as the single
gateway reaches vLLM) straight to an engine replica's door.

Which replica: the adapter's home on the same ring Serve's request router uses (ring_router.py
`SeededRing`: the replicas' ids, balanced over the published release's adapters), so a request
lands where it would have through the handle; past the ring's load bound (the gateway's
`affinity_load_factor`, 1.25 x the mean of this ingress's requests in flight by default, and
`affinity_min_inflight`, as the single gateway's) it spills to the next replica, where Serve's
router spills only at a replica's `max_ongoing_requests`; the base model goes to the least
loaded, in turn among equals.

Where the doors are: the cluster's key-value store, read every `refresh_s` in a thread. A door that
refuses a connection is dropped (nothing was delivered: the next replica takes the request) and
its entry deleted (replica ids are never reused). The handle takes a request when no door is known
(the first second after a start, or every door refused), and when the door answers that it lacks
the adapter's bytes (a node without the folder: the handle call carries them). Delivery is as
before: once a door accepted a request, any failure is the gateway's 503, never a second send.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from fedrouter.serving.ray import door
from fedrouter.serving.ray.handle_transport import HandleTransport
from fedrouter.serving.ray.ring_router import SeededRing
from fedrouter.serving.transport import AioResponse, HotTransport

log = logging.getLogger("fedrouter.serving")
_REFUSED = (httpx.ConnectError, httpx.ConnectTimeout)


class _Door:
    def __init__(self, url: str, secret: str, read_timeout_s: float):
        self.url = url
        self.hot = HotTransport(url, {"authorization": f"Bearer {secret}"}, read_timeout_s)
        self.inflight = 0


class _DoorResponse:
    """A door's answer under the names the gateway reads (status_code, aread, aiter_lines, aclose),
    holding its door's in-flight count until closed."""

    def __init__(self, response: AioResponse, through: _Door):
        self._r, self._door, self._open = response, through, True
        self.status_code = response.status_code

    async def aread(self) -> bytes:
        return await self._r.aread()

    def aiter_lines(self) -> AsyncIterator[str]:
        return self._r.aiter_lines()

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._door.inflight -= 1
            await self._r.aclose()


class DirectTransport(HandleTransport):
    doors = True

    @classmethod
    def for_gateway(cls, engine: Any, base_model: str, keys: list[str], settings: Any) -> HandleTransport:
        return cls(
            engine,
            base_model,
            keys,
            read_timeout_s=settings.request_timeout_s,
            load_factor=settings.affinity_load_factor,
            min_inflight=settings.affinity_min_inflight,
        )

    def __init__(
        self,
        engine: Any,
        base_model: str,
        keys: list[str],
        read_timeout_s: float = 600.0,
        load_factor: float = 1.25,  # the gateway's affinity_load_factor
        min_inflight: int = 0,  # the gateway's affinity_min_inflight
        refresh_s: float = 1.0,  # 0: only when `refresh` is called (tests)
        listed: Callable[[], dict[str, str]] = door.listed,  # replica id -> door URL (blocking)
        secret: Callable[[], str] = door.cluster_secret,
        forget: Callable[[str], None] = door.forget,
    ):
        """`keys`: the starting release's content names (the ring's balanced homes; a publish
        reseeds them, ring_router.reseed)."""
        super().__init__(engine, base_model)
        self._homes = SeededRing(keys, load_factor=load_factor, min_inflight=min_inflight)
        self._doors: dict[str, _Door] = {}
        self._listed, self._secret_of, self._forget = listed, secret, forget
        self._secret: str | None = None
        self._read_timeout_s, self._refresh_s = read_timeout_s, refresh_s
        self._refresher: asyncio.Task | None = None
        self._closing: set[_Door] = set()
        self._turn = itertools.count()
        self.through = {"door": 0, "handle": 0}  # requests per way (tests, benchmarks)

    async def refresh(self) -> None:
        """Read the doors' table once: new doors open, unlisted ones go (once idle)."""
        if self._secret is None:
            self._secret = await asyncio.to_thread(self._secret_of)
        table = await asyncio.to_thread(self._listed)
        for rid in set(self._doors) - set(table):
            self._closing.add(self._doors.pop(rid))
        for rid, url in table.items():
            if rid not in self._doors or self._doors[rid].url != url:
                if rid in self._doors:
                    self._closing.add(self._doors[rid])
                self._doors[rid] = _Door(url, self._secret, self._read_timeout_s)
        for gone in [d for d in self._closing if d.inflight <= 0]:
            self._closing.discard(gone)
            await gone.hot.close()

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # the GCS is briefly away: keep the table as it is
                log.warning("doors: could not read the table: %r", e)
            await asyncio.sleep(self._refresh_s)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for d in [*self._doors.values(), *self._closing]:
            await d.hot.close()
        self._doors, self._closing = {}, set()

    def _drop(self, rid: str) -> None:
        gone = self._doors.pop(rid, None)
        if gone is not None:
            self._closing.add(gone)
            asyncio.get_running_loop().run_in_executor(None, self._forget, rid)

    def _choose(self, key: str | None, loads: dict[str, int]) -> str:
        """An adapter's home (past the load bound, the next); the base model: the fewest in flight,
        round-robin among equals (as Serve spreads requests without a model id)."""
        if key is not None:
            return self._homes.of(sorted(self._doors)).choose(key, loads)[0]
        ids = sorted(loads)
        turn = next(self._turn) % len(ids)
        return min(ids, key=lambda r: (loads[r], (ids.index(r) - turn) % len(ids)))

    async def _generate(self, request: httpx.Request, path: str) -> Any:
        if self._refresher is None and self._refresh_s > 0:  # inside the event loop now
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        if self._doors:
            content = await request.aread()
            model = orjson.loads(content).get("model", "")
            folder = self.adapters.get(model)
            key = model if folder is not None else None  # the base model has no home
            headers = {door.ADAPTER: key or ""}
            if folder is not None:
                headers[door.FOLDER] = folder
            tried: set[str] = set()
            while loads := {rid: d.inflight for rid, d in self._doors.items() if rid not in tried}:
                rid = self._choose(key, loads)
                through = self._doors[rid]
                through.inflight += 1
                try:
                    response = await through.hot.send("POST", path, content, headers)
                except _REFUSED as e:  # never delivered: the next replica takes it
                    through.inflight -= 1
                    log.warning("door of engine replica %s refused (%r): dropped", rid, e)
                    tried.add(rid)
                    self._drop(rid)
                    continue
                except BaseException:
                    through.inflight -= 1
                    raise
                marker = response.headers.get(door.DOOR)
                if marker is None:
                    self.through["door"] += 1
                    return _DoorResponse(response, through)
                through.inflight -= 1
                reason = (await response.aread())[:500].decode("utf-8", "replace")
                await response.aclose()
                if marker != "unknown-adapter":  # the engine failed before answering: as a failed call
                    raise httpx.ReadError(f"engine replica {rid} failed: {reason}")
                break  # its bytes travel with the handle call
        self.through["handle"] += 1
        return await super()._generate(request, path)
