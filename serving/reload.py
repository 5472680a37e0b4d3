"""Hot reload: swap the served release while traffic flows, without losing a request.

1. validate the new release fully, its digests included (nothing is touched if it is bad); a
   release with the digest of the one served is "unchanged", whatever its folder is called;
2. register its adapters under content-derived names in every replica that is up (a replica
   that is down gets them when it is back; none up: 503, nothing changed);
3. build its router, then swap release + router + name map in one step (a failure undoes the
   registrations of step 2);
4. requests resolved before the swap finish on the old release (each holds a lease on it);
   once none is left, the old adapters that no live release uses are unloaded.
Every response therefore names exactly one release in `x-fedrouter-release`. One reload at a
time (a lock, waited for at most `reload_timeout_s`); retiring takes the same lock, so it never
races a reload or a rollback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from fedrouter.router.embed import Embedder, load_embedder
from fedrouter.router.release import Release, ReleaseError, load_release
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable, BadRequest, GatewayError
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.registry import Registry, ServedRelease, backend_adapter_name

log = logging.getLogger("fedrouter.serving")


class Conflict(GatewayError):
    status, type, code = 409, "conflict", "conflict"


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
        reload_timeout_s: float = 300.0,
        route_max_chars: int = 2048,
        route_timeout_s: float = 30.0,
        embed_device: str = "cpu",
        embed_backend: str = "torch",
        embed_threads: int = 0,
        embedder: Embedder | None = None,
    ):
        self._registry, self._pool, self._metrics = registry, pool, metrics
        self._max_batch, self._max_lora_rank = max_batch, max_lora_rank
        self._drain_timeout_s, self._reload_timeout_s = drain_timeout_s, reload_timeout_s
        self._route = {"route_max_chars": route_max_chars, "route_timeout_s": route_timeout_s}
        self._embed_device = embed_device
        self._embed_backend, self._embed_threads = embed_backend, embed_threads
        self._embedder = embedder  # fixed by tests; else rebuilt from each release's manifest
        self._lock = asyncio.Lock()
        self.previous: Path | None = None
        self.retiring: set[asyncio.Task] = set()
        self._draining: list[ServedRelease] = []  # swapped out, requests still running on them

    async def install_first(self, release: Release) -> None:
        self._registry.install(await self._prepare(release, None))

    async def _prepare(self, release: Release, current: ServedRelease | None) -> ServedRelease:
        """Register the release's adapters and build its router; undo the registrations on failure."""
        loaded = await self._pool.register(_names(release))
        try:
            if self._embedder is not None:
                emb = self._embedder
            elif current is not None and current.router.embedder.info == release.manifest.embedder:
                emb = current.router.embedder  # same model: no reload
            else:
                emb = await asyncio.to_thread(
                    load_embedder,
                    release.manifest.embedder,
                    self._embed_device,
                    self._embed_backend,
                    self._embed_threads,
                )
            base = self._pool.base_model(release.manifest.base_model.name)
            return ServedRelease(release, emb, base, self._metrics, self._max_batch, **self._route)
        except BaseException as e:
            await self._pool.unload(loaded)
            if isinstance(e, Exception) and not isinstance(e, GatewayError):
                raise BackendUnavailable(f"could not build the router of release {release.id}: {e!r}"[:500]) from e
            raise

    async def load(self, path: str | Path) -> dict:
        try:
            await asyncio.wait_for(self._lock.acquire(), self._reload_timeout_s)
        except asyncio.TimeoutError:
            raise Conflict("another reload is still running; try again later", retry_after=10) from None
        try:
            return await self._load(path)
        finally:
            self._lock.release()

    async def _load(self, path: str | Path) -> dict:
        current = self._registry.current
        try:
            release = await asyncio.to_thread(
                load_release, path, max_lora_rank=self._max_lora_rank, expect_base=current.base_public
            )
        except ReleaseError as e:
            raise BadRequest(
                f"release refused, still serving {current.id}: " + "; ".join(e.problems), "release"
            ) from None
        if release.digest == current.digest:
            return {"status": "unchanged", "release": current.id, "digest": current.digest}
        started = time.monotonic()
        try:
            new = await self._prepare(release, current)
        except GatewayError as e:
            e.message = f"release {release.id} not loaded, still serving {current.id}: {e.message}"
            raise
        old = self._registry.install(new)
        assert old is not None
        switch_s = time.monotonic() - started
        self.previous = old.release.path
        self._draining.append(old)
        task = asyncio.create_task(self._retire(old))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)
        log.info(
            "now serving release %s [%s] (was %s); switched in %.2f s", release.id, new.digest[:12], old.id, switch_s
        )
        return {
            "status": "switched",
            "release": release.id,
            "digest": release.digest,
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
        async with self._lock:  # never while a reload registers or swaps
            self._draining.remove(old)
            live = set(self._registry.current.adapters.values())
            for other in self._draining:
                live |= set(other.adapters.values())
            gone = set(old.adapters.values()) - live  # names shared with a live release stay
            await self._pool.unregister(gone)
        log.info("retired release %s", old.id)

    async def close(self) -> None:
        for t in list(self.retiring):
            t.cancel()


def _names(release: Release) -> dict[str, str]:
    """vLLM name -> adapter folder."""
    digests = release.manifest.digests
    return {backend_adapter_name(n, digests[n]): str(release.adapter_dir(n)) for n in release.manifest.adapters}
