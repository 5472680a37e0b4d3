"""The release being served, and how a request's `model` becomes a vLLM model name.

Owns the mapping public name <-> vLLM name for the current release: adapters are registered in
vLLM under versioned names (`name@release`) and clients only see plain names. `resolve` turns a
request's `model` ("auto", an adapter, or the base model) into a `Target`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedrouter.router.batcher import MicroBatcher
from fedrouter.router.embed import Embedder
from fedrouter.router.release import Release
from fedrouter.router.router import Route, Router
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable, BadRequest, ModelNotFound
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.supervisor import backend_adapter_name

log = logging.getLogger("fedrouter.serving")
AUTO = "auto"


@dataclass(frozen=True)
class Target:
    public: str  # the name clients see in `model` and x-fedrouter-adapter
    backend: str  # the name vLLM knows
    release_id: str
    route: Route | None  # set when model="auto"
    served: ServedRelease | None = field(default=None, repr=False, compare=False)

    def done(self) -> None:
        """The request is answered: its release may be retired once none are left."""
        if self.served is not None:
            self.served.release_lease()


class ServedRelease:
    """One release ready to serve: its router, its micro-batcher and its name map."""

    def __init__(
        self, release: Release, embedder: Embedder, base_backend: str, metrics: GatewayMetrics, max_batch: int
    ):
        self.release = release
        self.router = Router(release, embedder)
        self.base_public = release.manifest.base_model.name
        self.base_backend = base_backend
        self.adapters = {n: backend_adapter_name(n, release.id) for n in release.manifest.adapters}

        def route_batch(texts: list[str]) -> list[Route]:
            metrics.embed_batch.observe(len(texts))
            return self.router.route_batch(texts)

        self.batcher: MicroBatcher[Route] = MicroBatcher(route_batch, max_batch=max_batch)
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

    def public_models(self) -> list[str]:
        return [AUTO, self.base_public, *self.adapters]


class Registry:
    def __init__(self, metrics: GatewayMetrics):
        self._metrics = metrics
        self._current: ServedRelease | None = None

    @property
    def current(self) -> ServedRelease:
        if self._current is None:
            raise BackendUnavailable("no release is loaded yet")
        return self._current

    def install(self, served: ServedRelease) -> ServedRelease | None:
        """Make `served` current in one step; returns the previous one."""
        previous, self._current = self._current, served
        return previous

    async def resolve(self, model: object, text: Callable[[], str | None]) -> Target:
        """`text` gives the prompt to route on; it is only called for model="auto"."""
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a non-empty string: 'auto', an adapter name or the base model", "model")
        served = self.current  # one snapshot: the whole request uses one release
        served.acquire()  # before any await, so a swap cannot retire it under this request
        try:
            return await self._resolve(served, model, text)
        except BaseException:
            served.release_lease()
            raise

    async def _resolve(self, served: ServedRelease, model: str, text: Callable[[], str | None]) -> Target:
        if model == AUTO:
            prompt = text()
            if prompt is None:
                raise BadRequest("model='auto' needs text to route on (a user message or a text prompt)", "model")
            started = time.perf_counter()
            route = await served.batcher.submit(prompt)
            self._metrics.routing_seconds.observe(time.perf_counter() - started)
            if route.adapter is None:
                return Target(served.base_public, served.base_backend, served.id, route, served)
            return Target(route.adapter, served.adapters[route.adapter], served.id, route, served)
        if model == served.base_public:
            return Target(model, served.base_backend, served.id, None, served)
        if model in served.adapters:
            return Target(model, served.adapters[model], served.id, None, served)
        raise ModelNotFound(model, served.public_models())


async def register_adapters(pool: BackendPool, release: Release) -> str:
    """Make every replica serve the release's adapters; returns the base model's vLLM name.

    Adapters a replica already serves (supervised mode passes them as --lora-modules) are left
    alone; others are loaded with vLLM's runtime endpoint, which needs the replica to run with
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and to see the release's folder.
    """
    await pool.refresh()
    names = {backend_adapter_name(n, release.id): str(release.adapter_dir(n)) for n in release.manifest.adapters}
    loaded: list[tuple[object, str]] = []
    try:
        for b in pool.backends:
            for name, path in names.items():
                if name in b.served:
                    continue
                r = await b.client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
                if r.status_code != 200:
                    raise BackendUnavailable(
                        f"vLLM at {b.url} refused adapter {name!r} ({r.status_code}: {r.text[:300]}); "
                        "start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"
                    )
                loaded.append((b, name))
    except Exception:
        for b, name in loaded:  # leave the backends as they were
            await _unload(b, name)
        raise
    await pool.refresh()
    return _base_name(pool, release.manifest.base_model.name)


async def unregister_adapters(pool: BackendPool, release: Release) -> None:
    """Unload a retired release's adapters from every replica (best effort)."""
    for b in pool.backends:
        for n in release.manifest.adapters:
            await _unload(b, backend_adapter_name(n, release.id))


async def _unload(backend, name: str) -> None:
    try:
        r = await backend.client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        if r.status_code not in (200, 404):
            log.warning("vLLM at %s kept adapter %s (%s: %s)", backend.url, name, r.status_code, r.text[:200])
    except Exception as e:  # a backend that is down has nothing loaded anyway
        log.warning("could not unload %s from %s: %s", name, backend.url, e)


def _base_name(pool: BackendPool, wanted: str) -> str:
    served = pool.backends[0].served
    if wanted in served:
        return wanted
    roots = sorted(n for n in served if "@" not in n)
    if len(roots) == 1:
        log.warning("vLLM serves the base model as %r, the release calls it %r", roots[0], wanted)
        return roots[0]
    raise BackendUnavailable(f"vLLM does not serve the release's base model {wanted!r} (it serves {sorted(served)})")
