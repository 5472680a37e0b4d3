"""The gateway application: `create_app(settings)` wires release, router, vLLM and routes.

No module-level state: everything lives in the app built here. Tests inject an embedder and an
HTTP transport standing in for vLLM; `fedrouter serve` passes neither.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from fedrouter.router.embed import Embedder
from fedrouter.router.release import load_release
from fedrouter.serving.admin_routes import build_admin_router
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import install_error_handlers
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.openai_routes import build_openai_router
from fedrouter.serving.registry import Registry, register_adapters
from fedrouter.serving.reload import Reloader
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.supervisor import VLLMSupervisor, vllm_lora_rank

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
        urls,
        request_timeout_s=settings.request_timeout_s,
        connect_retry_s=settings.connect_retry_s,
        transport=transport,
        policy=settings.replica_policy,
        load_factor=settings.affinity_load_factor,
    )
    pool.on_error = lambda url: metrics.backend_errors.labels(url).inc()
    pool.on_pick = lambda url, placement: metrics.backend_requests.labels(url, placement).inc()
    for b in pool.backends:
        metrics.backend_inflight.labels(b.url).set_function(lambda b=b: b.inflight)

    max_rank = vllm_lora_rank(release.manifest.lora.r) if supervisor is not None else None
    reloader = Reloader(
        registry,
        pool,
        metrics,
        max_batch=settings.max_batch,
        max_lora_rank=max_rank,
        drain_timeout_s=settings.drain_timeout_s,
        embed_device=settings.embed_device,
        embed_backend=settings.embed_backend,
        embed_threads=settings.embed_threads,
        embedder=embedder,
    )

    async def keep_backends() -> None:
        """Restart a dead supervised vLLM; re-register the current adapters in any replica that lost them."""
        while True:
            await asyncio.sleep(1.0)
            try:
                if supervisor is not None and not supervisor.alive():
                    log.error("vLLM exited unexpectedly; restarting it\n%s", supervisor.log_tail(15))
                    supervisor.restarts += 1
                    supervisor.start(registry.current.release)
                    await asyncio.to_thread(supervisor.wait_healthy, settings.vllm_start_timeout_s)
                    log.info("vLLM is back")
                await pool.refresh()
                wanted = set(registry.current.adapters.values())
                if any(b.healthy and not wanted <= b.served for b in pool.backends):
                    log.warning(
                        "a vLLM replica lost release %s's adapters; registering them again", registry.current.id
                    )
                    await register_adapters(pool, registry.current.release)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("keeping the backends up failed; trying again")

    async def watch_release() -> None:
        """--watch: reload when the release path (typically `releases/latest`) points elsewhere."""
        assert settings.release is not None
        seen = Path(settings.release).resolve()
        while True:
            await asyncio.sleep(settings.watch_interval_s)
            now = Path(settings.release).resolve()
            if now == seen or not now.is_dir():
                continue
            seen = now
            try:
                log.info("watch: %s now points at %s", settings.release, now)
                await reloader.load(now)
            except Exception as e:
                log.error("watch: release %s refused: %s", now, getattr(e, "message", e))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks: list[asyncio.Task] = []
        try:
            if supervisor is not None:
                started = time.monotonic()
                supervisor.start(release)
                log.info("starting vLLM for release %s (log: %s)", release.id, supervisor.log_path)
                await asyncio.to_thread(supervisor.wait_healthy, settings.vllm_start_timeout_s)
                log.info("vLLM is ready in %.1f s", time.monotonic() - started)
            await pool.wait_ready(settings.vllm_start_timeout_s)
            await reloader.install_first(release)
            log.info(
                "serving release %s: %d adapters (%s) on base %s",
                release.id,
                len(release.manifest.adapters),
                ", ".join(release.manifest.adapters),
                release.manifest.base_model.name,
            )
            tasks.append(asyncio.create_task(keep_backends()))
            if settings.watch:
                tasks.append(asyncio.create_task(watch_release()))
            yield
        finally:
            for t in tasks:
                t.cancel()
                with suppress(asyncio.CancelledError):
                    await t
            await reloader.close()
            with suppress(Exception):
                await registry.current.batcher.close()
            await pool.close()
            if supervisor is not None:
                supervisor.stop()

    app = FastAPI(title="fedrouter gateway", lifespan=lifespan)
    app.state.registry, app.state.pool, app.state.metrics = registry, pool, metrics
    app.state.supervisor, app.state.reloader = supervisor, reloader
    install_error_handlers(app)
    app.include_router(build_openai_router(registry, pool, metrics, settings.max_inflight))
    if settings.admin_token:
        app.include_router(build_admin_router(registry, reloader, settings.admin_token))

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
