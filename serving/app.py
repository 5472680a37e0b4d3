"""The gateway application: `create_app(settings)` wires release, router, vLLM and routes.

No module-level state: everything lives in the app built here. Tests inject an embedder and an
HTTP transport standing in for vLLM; `fedrouter serve` passes neither.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, suppress

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from router.embed import Embedder, load_embedder
from router.release import load_release
from serving.backends import BackendPool
from serving.errors import install_error_handlers
from serving.metrics import GatewayMetrics
from serving.openai_routes import build_openai_router
from serving.registry import Registry, ServedRelease, register_adapters
from serving.settings import GatewaySettings
from serving.supervisor import VLLMSupervisor

log = logging.getLogger("fedrouter.serving")


def create_app(
    settings: GatewaySettings,
    *,
    embedder: Embedder | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    if settings.release is None:
        raise ValueError("a release to serve is needed (--release or FEDROUTER_RELEASE)")
    release = load_release(settings.release)  # refuse a bad release before starting anything
    metrics = GatewayMetrics()
    registry = Registry(metrics)
    supervisor = None
    urls = list(settings.backends)
    if not urls:
        supervisor = VLLMSupervisor(
            settings.vllm_host, settings.vllm_port, settings.vllm_args, settings.vllm_kv_cache_gib, settings.vllm_log
        )
        urls = [supervisor.url]
    pool = BackendPool(
        urls, request_timeout_s=settings.request_timeout_s, connect_retry_s=settings.connect_retry_s, transport=transport
    )
    pool.on_error = lambda url: metrics.backend_errors.labels(url).inc()

    async def install(rel) -> None:
        base_backend = await register_adapters(pool, rel)
        emb = embedder or await asyncio.to_thread(load_embedder, rel.manifest.embedder, settings.embed_device)
        registry.install(ServedRelease(rel, emb, base_backend, metrics, settings.max_batch))

    async def watch_vllm() -> None:
        """Restart vLLM if it dies, with the current release's adapters."""
        assert supervisor is not None
        while True:
            await asyncio.sleep(1.0)
            if supervisor.alive():
                continue
            log.error("vLLM exited unexpectedly; restarting it\n%s", supervisor.log_tail(15))
            supervisor.restarts += 1
            try:
                supervisor.start(registry.current.release)
                await asyncio.to_thread(supervisor.wait_healthy, settings.vllm_start_timeout_s)
                await register_adapters(pool, registry.current.release)
                log.info("vLLM is back")
            except Exception:
                log.exception("restarting vLLM failed; trying again")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        watcher = None
        try:
            if supervisor is not None:
                started = time.monotonic()
                supervisor.start(release)
                log.info("starting vLLM for release %s (log: %s)", release.id, supervisor.log_path)
                await asyncio.to_thread(supervisor.wait_healthy, settings.vllm_start_timeout_s)
                log.info("vLLM is ready in %.1f s", time.monotonic() - started)
            await pool.wait_ready(settings.vllm_start_timeout_s)
            await install(release)
            log.info(
                "serving release %s: %d adapters (%s) on base %s",
                release.id, len(release.manifest.adapters), ", ".join(release.manifest.adapters),
                release.manifest.base_model.name,
            )
            if supervisor is not None:
                watcher = asyncio.create_task(watch_vllm())
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with suppress(asyncio.CancelledError):
                    await watcher
            with suppress(Exception):
                await registry.current.batcher.close()
            await pool.close()
            if supervisor is not None:
                supervisor.stop()

    app = FastAPI(title="fedrouter gateway", lifespan=lifespan)
    app.state.registry, app.state.pool, app.state.metrics, app.state.supervisor = registry, pool, metrics, supervisor
    install_error_handlers(app)
    app.include_router(build_openai_router(registry, pool, metrics, settings.max_inflight))

    @app.get("/health")
    async def health() -> Response:
        await pool.refresh()
        up = [b.url for b in pool.backends if b.healthy]
        body = {
            "status": "ok" if up else "unavailable",
            "release": registry.current.id,
            "backends": [{"url": b.url, "healthy": b.healthy} for b in pool.backends],
        }
        return JSONResponse(body, status_code=200 if up else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
