"""The gateway's background duties, as one object: start the engine, keep it up, follow releases.

- `start`: start the supervised vLLM (if any) and wait for it, wait for every replica, install
  the first release; then run the keeper and, with `watch`, the watcher.
- keeper (every second): restart a dead supervised vLLM after a capped backoff, with the flags it
  started with; ask every replica what it serves; have the reloader register the served release
  in a replica that lacks it (serving/reload.py decides when, under its lock).
- watcher (`--watch`): reload when the release path (typically `releases/latest`) points elsewhere;
  a target that fails to load is tried again at every interval (it may be completed later).
- `stop`: cancel both, stop the reloader's retirements, the pool and vLLM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from pathlib import Path

from fedrouter.router.release import Release
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.registry import Registry
from fedrouter.serving.reload import Reloader
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.supervisor import VLLMSupervisor

log = logging.getLogger("fedrouter.serving")
STABLE_S = 60.0  # a vLLM up this long is healthy again: its next crash restarts it at once


class Supervision:
    def __init__(
        self,
        settings: GatewaySettings,
        registry: Registry,
        pool: BackendPool,
        reloader: Reloader,
        supervisor: VLLMSupervisor | None,
    ):
        self._settings, self._registry, self._pool = settings, registry, pool
        self._reloader, self.supervisor = reloader, supervisor
        self._tasks: list[asyncio.Task] = []

    async def start(self, release: Release) -> None:
        s = self._settings
        if self.supervisor is not None:
            started = time.monotonic()
            self.supervisor.start(release)
            log.info("starting vLLM for release %s (log: %s)", release.id, self.supervisor.log_path)
            await asyncio.to_thread(self.supervisor.wait_healthy, s.vllm_start_timeout_s)
            log.info("vLLM is ready in %.1f s", time.monotonic() - started)
        await self._pool.wait_ready(s.vllm_start_timeout_s)
        await self._reloader.install_first(release)
        log.info(
            "serving release %s: %d adapters (%s) on base %s",
            release.id,
            len(release.manifest.adapters),
            ", ".join(release.manifest.adapters),
            release.manifest.base_model.name,
        )
        self._tasks.append(asyncio.create_task(self._keep()))
        if s.watch:
            self._tasks.append(asyncio.create_task(self._watch()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with suppress(asyncio.CancelledError):
                await t
        await self._reloader.close()
        if self._registry.serving:
            with suppress(Exception):
                await self._registry.current.batcher.close()
        await self._pool.close()
        if self.supervisor is not None:
            self.supervisor.close()

    async def restart_vllm(self) -> None:
        """Restart the supervised vLLM with the flags it started with, after a capped backoff."""
        sup = self.supervisor
        assert sup is not None
        delay = sup.restart_delay()
        code = sup.process.poll() if sup.process else None
        log.error("vLLM exited (code %s); restarting in %.0f s\n%s", code, delay, sup.log_tail(15))
        sup.stop()  # its whole process group: no engine process is left behind
        await asyncio.sleep(delay)
        sup.restarts += 1
        sup.failures += 1
        sup.start()
        await asyncio.to_thread(sup.wait_healthy, self._settings.vllm_start_timeout_s)
        log.info("vLLM is back")

    async def keep_pass(self, up_since: float) -> float:
        """One pass of the keeper; returns since when the supervised vLLM has been up."""
        sup = self.supervisor
        if sup is not None and not sup.alive():
            await self.restart_vllm()
            up_since = time.monotonic()
        elif sup is not None and time.monotonic() - up_since > STABLE_S:
            sup.failures = 0
        await self._reloader.keep_registered()
        return up_since

    async def _keep(self) -> None:
        up_since = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            try:
                up_since = await self.keep_pass(up_since)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("keeping the backends up failed (%s); trying again", getattr(e, "detail", None) or e)

    async def _watch(self) -> None:
        path = self._settings.release
        assert path is not None
        seen = self._registry.current.release.path
        refused: dict[Path, str] = {}
        while True:
            await asyncio.sleep(self._settings.watch_interval_s)
            try:
                now = Path(path).resolve()
                if now == seen or not now.is_dir():
                    continue
                log.info("watch: %s now points at %s", path, now)
                await self._reloader.load(now)
                seen = now
                refused.pop(now, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                message = getattr(e, "message", None) or repr(e)
                if refused.get(now) != message:  # say it once per target and reason
                    log.error("watch: release %s refused (will try again): %s", now, message)
                refused[now] = message
