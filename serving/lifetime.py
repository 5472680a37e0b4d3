"""One request's lifetime, owned by one object: in-flight slot, release pin, status, timing.

    async with RequestLifetime(slots, metrics) as life:   # starts the clock
        body = ...                                         # read before taking a slot
        life.take_slot()                                   # 429 (Retry-After) when full
        life.pin(await registry.resolve(...))              # the release it is answered from
        return life.respond(response)                      # a stream keeps the lifetime open

Whatever the exit (an answer, an error, a client that went away, a stream cut half way), the slot
is given back, the release pin dropped, and the request counted once with its status and time.
A streamed response carries the lifetime and ends it after its last byte.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fedrouter.serving.errors import ClientGone, GatewayError, Overloaded
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.registry import Target

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; only ever in metrics


class Slots:
    """The gateway's in-flight limit, shared by all requests of one app."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0


class RequestLifetime:
    def __init__(self, slots: Slots, metrics: GatewayMetrics):
        self._slots, self._metrics = slots, metrics
        self.selection, self.adapter, self.status = "explicit", "-", 500
        self.target: Target | None = None
        self._slot = self._ended = self._streaming = False
        self._started = time.perf_counter()

    async def __aenter__(self) -> RequestLifetime:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._streaming and exc is None:
            return False  # the stream ends the lifetime
        if isinstance(exc, GatewayError):
            self.status = exc.status
        elif isinstance(exc, (ClientGone, asyncio.CancelledError)):
            self.status = CLIENT_CLOSED
        elif exc is not None:
            self.status = 500
        self.end()
        return False

    def take_slot(self) -> None:
        if self._slots.used >= self._slots.limit:
            raise Overloaded(f"the gateway is at its limit of {self._slots.limit} requests in flight; retry shortly")
        self._slots.used += 1
        self._slot = True
        self._metrics.inflight.inc()

    def pin(self, target: Target) -> None:
        self.target, self.adapter = target, target.public

    def respond(self, response: Response) -> Response:
        self.status = response.status_code
        if isinstance(response, StreamingResponse):
            self._streaming = True
            return _LifetimeStream(response, self)
        return response

    def end(self) -> None:
        """Idempotent: release everything this request held and count it."""
        if self._ended:
            return
        self._ended = True
        if self._slot:
            self._slots.used -= 1
            self._metrics.inflight.dec()
        if self.target is not None:
            self.target.done()
        self._metrics.requests.labels(self.adapter, self.selection, str(self.status)).inc()
        self._metrics.request_seconds.labels(self.selection).observe(time.perf_counter() - self._started)


class _LifetimeStream(StreamingResponse):
    """A streamed answer that ends its request's lifetime when the ASGI call ends, however it ends.

    It always listens for the client's disconnect (as Starlette does for ASGI < 2.4), so a client
    that goes away cancels the relay at once, which closes the vLLM connection: vLLM aborts."""

    def __init__(self, inner: StreamingResponse, life: RequestLifetime):
        super().__init__(inner.body_iterator, status_code=inner.status_code, media_type=inner.media_type)
        self.raw_headers = inner.raw_headers
        self._life = life
        self._relay_failed = getattr(inner, "relay_failed", lambda: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        finished = False

        async def stream() -> None:
            nonlocal finished
            await self.stream_response(send)
            finished = True

        gone = False
        try:
            await _first_of(stream(), _disconnected(receive))
        except (ClientGone, OSError):
            gone = True  # nobody is left to answer
        finally:
            if gone:
                self._life.status = CLIENT_CLOSED
            elif not finished or self._relay_failed():
                self._life.status = 503
            self._life.end()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _first_of(work: Awaitable[T], gone: Awaitable[None]) -> T:
    """`work`'s result, unless `gone` completes first: then `work` is cancelled and ClientGone raised."""
    w, g = asyncio.ensure_future(work), asyncio.ensure_future(gone)
    try:
        await asyncio.wait({w, g}, return_when=asyncio.FIRST_COMPLETED)
        if w.done():
            return w.result()
        raise ClientGone()
    finally:
        for t in (w, g):
            if not t.done():
                t.cancel()
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Run `work` (forwarding to vLLM) but cancel it if the client disconnects meanwhile: closing
    the vLLM connection makes vLLM abort the generation. Call after the body has been read.

    `work` runs in the caller's task (no task switch on the hot path); a watcher task cancels
    that task when the client's disconnect arrives."""
    me = asyncio.current_task()
    assert me is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(request.receive)
        gone = True
        me.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()
