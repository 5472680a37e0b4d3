"""Hot reload: swap the served release while traffic flows, without losing a request.

1. validate the new release fully (nothing is touched if it is bad);
2. register its adapters in every vLLM replica under versioned names (`name@release`);
3. build its router, then swap release + router + name map in one step;
4. requests resolved before the swap finish on the old release (each holds a lease on it);
   once none is left, the old adapters are unloaded.
Every response therefore names exactly one release in `x-fedrouter-release`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from fedrouter.router.embed import Embedder, load_embedder
from fedrouter.router.release import Release, ReleaseError, load_release
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BadRequest, GatewayError
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.registry import Registry, ServedRelease, register_adapters, unregister_adapters

log = logging.getLogger("fedrouter.serving")


class Conflict(GatewayError):
    status, type = 409, "conflict"


class Reloader:
    def __init__(
        self,
        registry: Registry,
        pool: BackendPool,
        metrics: GatewayMetrics,
        *,
        max_batch: int,
        max_lora_rank: int | None,
        drain_timeout_s: float,
        embed_device: str = "cpu",
        embed_backend: str = "torch",
        embed_threads: int = 0,
        embedder: Embedder | None = None,
    ):
        self._registry, self._pool, self._metrics = registry, pool, metrics
        self._max_batch, self._max_lora_rank = max_batch, max_lora_rank
        self._drain_timeout_s, self._embed_device = drain_timeout_s, embed_device
        self._embed_backend, self._embed_threads = embed_backend, embed_threads
        self._embedder = embedder  # fixed by tests; else rebuilt from each release's manifest
        self._lock = asyncio.Lock()
        self.previous: Path | None = None
        self.retiring: set[asyncio.Task] = set()

    async def install_first(self, release: Release) -> None:
        base_backend = await register_adapters(self._pool, release)
        self._registry.install(await self._served(release, base_backend, None))

    async def _served(self, release: Release, base_backend: str, current: ServedRelease | None) -> ServedRelease:
        if self._embedder is not None:
            emb = self._embedder
        elif current is not None and current.router.embedder.info == release.manifest.embedder:
            emb = current.router.embedder  # same model: no reload
        else:
            emb = await asyncio.to_thread(
                load_embedder, release.manifest.embedder, self._embed_device, self._embed_backend, self._embed_threads
            )
        return ServedRelease(release, emb, base_backend, self._metrics, self._max_batch)

    async def load(self, path: str | Path) -> dict:
        async with self._lock:
            current = self._registry.current
            try:
                release = load_release(path, max_lora_rank=self._max_lora_rank, expect_base=current.base_public)
            except ReleaseError as e:
                raise BadRequest(
                    f"release refused, still serving {current.id}: " + "; ".join(e.problems), "release"
                ) from None
            if release.id == current.id:
                return {"status": "unchanged", "release": current.id}
            started = time.monotonic()
            base_backend = await register_adapters(self._pool, release)
            new = await self._served(release, base_backend, current)
            old = self._registry.install(new)
            switch_s = time.monotonic() - started
            self.previous = old.release.path
            task = asyncio.create_task(self._retire(old))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)
            log.info("now serving release %s (was %s); switched in %.2f s", release.id, old.id, switch_s)
            return {
                "status": "switched",
                "release": release.id,
                "previous": old.id,
                "switch_s": round(switch_s, 3),
                "adapters": list(release.manifest.adapters),
            }

    async def rollback(self) -> dict:
        if self.previous is None:
            raise Conflict("no previous release to roll back to")
        return await self.load(self.previous)

    async def _retire(self, old: ServedRelease) -> None:
        clean = await old.drained(self._drain_timeout_s)
        if not clean:
            log.warning(
                "%d requests still on release %s after %.0f s; unloading it anyway",
                old.inflight,
                old.id,
                self._drain_timeout_s,
            )
        await old.batcher.close()
        if self._registry.current.id == old.id:  # rolled back to it meanwhile: keep its adapters
            return
        await unregister_adapters(self._pool, old.release)
        log.info("retired release %s", old.id)

    async def close(self) -> None:
        for t in list(self.retiring):
            t.cancel()
