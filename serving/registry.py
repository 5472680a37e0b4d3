"""The release being served, and how a request's `model` becomes a vLLM model name.

Owns the mapping public name <-> vLLM name: adapters are known to vLLM under names derived from
their content (`name@<digest>`), so two releases that both call themselves `v1` never share a
name unless they share the weights, and clients only see plain names. `resolve` turns a
request's `model` ("auto", an adapter, or the base model) into a `Target`. Registering the names
in vLLM is the backend layer's job (serving/backends.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field

import numpy as np

from fedrouter.router.batcher import MicroBatcher
from fedrouter.router.embed import Embedder
from fedrouter.router.release import Release
from fedrouter.router.router import Route, Router
from fedrouter.serving.errors import BackendUnavailable, BadRequest, ModelNotFound
from fedrouter.serving.metrics import GatewayMetrics

AUTO = "auto"


def backend_adapter_name(adapter: str, digest: str) -> str:
    """The name an adapter is registered under in vLLM: its public name and its content digest.
    vLLM caches adapters by name, so a name must never be reused for other weights."""
    return f"{adapter}@{digest[:16]}"


def engine_names(release: Release) -> dict[str, str]:
    """A release's name map, public adapter name -> vLLM name; built once per release (by the reloader)."""
    digests = release.manifest.digests
    return {n: backend_adapter_name(n, digests[n]) for n in release.manifest.adapters}


@dataclass(frozen=True)
class Target:
    public: str  # the name clients see in `model` and x-fedrouter-adapter
    backend: str  # the name vLLM knows
    release_id: str
    route: Route | None  # set when model="auto"
    served: ServedRelease | None = field(default=None, repr=False, compare=False)
    routing: str | None = None  # model="auto": "global" (every cluster) or "local" (the client's clusters)

    def done(self) -> None:
        """The request is answered: its release may be retired once none are left."""
        if self.served is not None:
            self.served.release_lease()


class ServedRelease:
    """One release ready to serve: its router, its micro-batcher and its name map."""

    def __init__(
        self,
        release: Release,
        adapters: dict[str, str],  # public name -> vLLM name (`engine_names`)
        engine_paths: dict[str, str],  # vLLM name -> the folder vLLM reads (the adapter store)
        embedder: Embedder,
        base_backend: str,
        metrics: GatewayMetrics,
        max_batch: int,
        *,
        route_max_chars: int,  # GatewaySettings'
        route_timeout_s: float,
    ):
        self.release = release
        self.router = Router(release, embedder)
        self.base_public = release.manifest.base_model.name
        self.base_backend = base_backend
        self.adapters = adapters
        self.engine_paths = engine_paths  # what the keeper registers again in a restarted replica
        self.route_max_chars, self.route_timeout_s = route_max_chars, route_timeout_s

        def embed_batch(texts: list[str]) -> list[np.ndarray]:
            metrics.embed_batch.observe(len(texts))
            return list(self.router.embedder.embed(texts))  # [N, dim] -> N rows

        # Embedding is batched across requests; the nearest-centroid search is per request, since
        # a request that names its client is routed among that client's clusters only.
        self.batcher: MicroBatcher[np.ndarray] = MicroBatcher(
            embed_batch, max_batch=max_batch, inline=getattr(embedder, "inline", False)
        )
        self.inflight = 0  # requests resolved against this release and not yet answered
        self._idle = asyncio.Event()
        self._idle.set()

    def acquire(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def release_lease(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request uses this release; False if some were still running at the timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    @property
    def id(self) -> str:
        return self.release.id

    @property
    def digest(self) -> str:
        return self.release.digest

    def public_models(self, allowed: Set[str] | None = None) -> list[str]:
        return [AUTO, self.base_public, *(a for a in self.adapters if allowed is None or a in allowed)]

    def routable(self, text: str) -> str:
        """The text routed on: cut to `route_max_chars`, lone surrogates replaced, so that no
        prompt can hold the embedder long or make it fail for the others in its batch."""
        text = text[: self.route_max_chars]
        return text.encode("utf-8", "replace").decode("utf-8")


class Registry:
    def __init__(self, metrics: GatewayMetrics):
        self._metrics = metrics
        self._current: ServedRelease | None = None

    @property
    def current(self) -> ServedRelease:
        if self._current is None:
            raise BackendUnavailable("no release is loaded yet; retry shortly")
        return self._current

    @property
    def serving(self) -> bool:
        return self._current is not None

    def install(self, served: ServedRelease) -> ServedRelease | None:
        """Make `served` current in one step; returns the previous one."""
        previous, self._current = self._current, served
        return previous

    async def resolve(
        self, model: str, text: Callable[[], str | None], client: str | None = None, allowed: Set[str] | None = None
    ) -> Target:
        """`text` gives the prompt to route on; it is only called for model="auto". `client`: the
        requester's client id; a known one routes `auto` among the clusters that client trained
        (the FedRouter paper's local mode), an unknown one or None among all of them (global).
        `allowed`: the adapters the caller may use (None: all); others do not exist for it."""
        served = self.current  # one snapshot: the whole request uses one release
        served.acquire()  # before any await, so a swap cannot retire it under this request
        try:
            return await self._resolve(served, model, text, client, allowed)
        except BaseException:
            served.release_lease()
            raise

    async def _resolve(
        self,
        served: ServedRelease,
        model: str,
        text: Callable[[], str | None],
        client: str | None,
        allowed: Set[str] | None = None,
    ) -> Target:
        if model == AUTO:
            prompt = text()
            if prompt is None:
                raise BadRequest("model='auto' needs text to route on (a user message or a text prompt)", "model")
            clusters = served.router.clusters_of(client) if client else None
            if allowed is not None:  # the caller's adapters only (within its own clusters, if any)
                mine = [c.id for c in served.release.manifest.clusters if c.adapter in allowed]
                clusters = [c for c in (clusters if clusters is not None else mine) if c in mine]
                if not clusters:  # no adapter of its own to route to: `auto` is the base model
                    return Target(served.base_public, served.base_backend, served.id, None, served, "local")
            started = time.perf_counter()
            try:
                vector = await served.batcher.submit(served.routable(prompt), timeout_s=served.route_timeout_s)
            except asyncio.TimeoutError:
                raise BackendUnavailable("routing timed out; retry shortly", "embedder timeout") from None
            except Exception as e:  # the embedder failed on this prompt: only this request fails
                raise BackendUnavailable("the router could not embed this prompt", repr(e)) from None
            route = served.router.route_vectors(vector[None, :], clusters)[0]
            self._metrics.routing_seconds.observe(time.perf_counter() - started)
            mode = "global" if clusters is None else "local"
            if route.adapter is None:
                return Target(served.base_public, served.base_backend, served.id, route, served, mode)
            return Target(route.adapter, served.adapters[route.adapter], served.id, route, served, mode)
        if model == served.base_public:
            return Target(model, served.base_backend, served.id, None, served)
        if model in served.adapters and (allowed is None or model in allowed):
            return Target(model, served.adapters[model], served.id, None, served)
        raise ModelNotFound(model, served.public_models(allowed))
