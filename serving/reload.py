"""The one owner of the engine's adapter state: what vLLM holds, and which release is served.

Every change to the adapters vLLM holds goes through this object, under one lock: the first
install, a reload (register, build, swap), the retirement of a swapped-out release (unload), and
the keeper's pass that registers the served release in a replica back from a restart. So a keeper
pass can never re-register a retired release's adapters after their unload, and an unload never
runs beside a registration. A failed reload undoes only what it loaded itself, and never a name a
live release (the current one, or one still draining) uses.

Hot reload, without losing a request:
1. validate the new release fully, its digests included (nothing is touched if it is bad); a
   release with the digest of the one served is "unchanged", whatever its folder is called;
2. copy its adapters into the content-addressed store (serving/adapter_store.py) and register
   them from there under content-derived names in every replica that is up (a replica that is
   down gets them when it is back; none up: 503, nothing changed);
3. build its router, then swap release + router + name map in one step (a failure undoes the
   registrations of step 2);
4. requests resolved before the swap finish on the old release (each holds a lease on it);
   once none is left, the old adapters that no live release uses are unloaded (from replicas this
   gateway alone uses; attached replicas may be shared, so nothing is unloaded there: serving/loader.py).
Every response therefore names exactly one release in `x-fedrouter-release`. A reload waits for
the lock at most `reload_timeout_s` (then 409).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from fedrouter.router.embed import Embedder, load_embedder
from fedrouter.router.release import Release, ReleaseError, load_release
from fedrouter.serving.adapter_store import AdapterStore
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable, BadRequest, GatewayError
from fedrouter.serving.loader import AdapterLoader
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.registry import Registry, ServedRelease, engine_names
from fedrouter.serving.settings import GatewaySettings

log = logging.getLogger("fedrouter.serving")


class Conflict(GatewayError):
    status, type, code = 409, "conflict", "conflict"


class Reloader:
    def __init__(
        self,
        registry: Registry,
        pool: BackendPool,
        loader: AdapterLoader,
        store: AdapterStore,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        *,
        max_lora_rank: int | None,  # the supervised vLLM's --max-lora-rank; None when attached
        embedder: Embedder | None = None,  # fixed by tests; else rebuilt from each release's manifest
    ):
        self._registry, self._pool, self._loader, self._store = registry, pool, loader, store
        self._metrics, self._settings = metrics, settings
        self._max_lora_rank = max_lora_rank
        self._embedder = embedder
        self._lock = asyncio.Lock()  # every change to vLLM's adapters, and the swap
        self.previous: Path | None = None
        self.retiring: set[asyncio.Task] = set()
        self._draining: list[ServedRelease] = []  # swapped out, requests still running on them

    async def install_first(self, release: Release) -> None:
        async with self._lock:
            self._registry.install(await self._prepare(release, None))

    def _live_names(self) -> set[str]:
        """vLLM names that a release requests may still reach uses: the current one and the draining ones."""
        live = set(self._registry.current.adapters.values()) if self._registry.serving else set()
        for other in self._draining:
            live |= set(other.adapters.values())
        return live

    async def _prepare(self, release: Release, current: ServedRelease | None) -> ServedRelease:
        """Store and register the release's adapters, build its router; on failure undo the
        registrations this call made, except names a live release uses."""
        if self._settings.route_only:  # the platform serves each adapter under the release's name
            names, paths, loaded = {a: a for a in release.manifest.adapters}, {}, []
        else:
            names = engine_names(release)  # the release's name map, built once
            paths = await asyncio.to_thread(self._store_adapters, release, names)
            loaded = await self._loader.register(paths, keep=self._live_names())
        try:
            if self._embedder is not None:
                emb = self._embedder
            elif current is not None and current.release.manifest.embedder == release.manifest.embedder:
                emb = current.router.embedder  # same model: no reload
            else:
                s = self._settings
                emb = await asyncio.to_thread(
                    load_embedder, release.manifest.embedder, s.embed_device, s.embed_backend, s.embed_threads
                )
            base = self._pool.base_model(release.manifest.base_model.name)
            return ServedRelease(
                release,
                names,
                paths,
                emb,
                base,
                self._metrics,
                self._settings.max_batch,
                route_max_chars=self._settings.route_max_chars,
                route_timeout_s=self._settings.route_timeout_s,
            )
        except BaseException as e:
            live = self._live_names()
            await self._loader.unload([(b, n) for b, n in loaded if n not in live])
            if isinstance(e, Exception) and not isinstance(e, GatewayError):
                raise BackendUnavailable(f"could not build the router of release {release.id}: {e!r}"[:500]) from e
            raise

    def _store_adapters(self, release: Release, names: dict[str, str]) -> dict[str, str]:
        """vLLM name -> the adapter's folder in the content-addressed store (never the release's)."""
        digests = release.manifest.digests
        try:
            return {names[a]: str(self._store.put(digests[a], release.adapter_dir(a))) for a in names}
        except (OSError, ValueError) as e:
            raise BadRequest(f"release {release.id}: its adapters cannot be stored: {e}"[:500], "release") from None

    async def load(self, path: str | Path) -> dict:
        try:
            await asyncio.wait_for(self._lock.acquire(), self._settings.reload_timeout_s)
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
                load_release,
                path,
                max_lora_rank=self._max_lora_rank,
                expect_base=current.base_public,
                expect_base_digest=current.release.manifest.base_model.digest,
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

    async def keep_registered(self) -> None:
        """The keeper's pass: register the served release's adapters in every replica that is up
        and lacks them (back from a restart, or down at a reload). Under the lock; skipped while a
        reload or a retirement holds it (the next pass comes a second later)."""
        if self._lock.locked():
            return
        async with self._lock:
            await self._pool.refresh()
            if self._settings.route_only:  # the platform loads adapters, not this gateway
                return
            served = self._registry.current
            if self._loader.lacking(set(served.adapters.values())):
                log.warning("a vLLM replica lacks release %s's adapters; registering them", served.id)
                await self._loader.register(served.engine_paths)

    async def _retire(self, old: ServedRelease) -> None:
        clean = await old.drained(self._settings.drain_timeout_s)
        if not clean:
            log.warning(
                "%d requests still on release %s after %.0f s; unloading it anyway",
                old.inflight,
                old.id,
                self._settings.drain_timeout_s,
            )
        await old.batcher.close()
        async with self._lock:  # never while a reload or a keeper pass registers, or a swap
            self._draining.remove(old)
            gone = set(old.adapters.values()) - self._live_names()  # names shared with a live release stay
            await self._loader.unregister(gone)
        log.info("retired release %s", old.id)

    async def close(self) -> None:
        for t in list(self.retiring):
            t.cancel()
