"""The gateway application: `create_app(settings)` wires release, router, vLLM and routes.

No module-level state: everything lives in the app built here. Tests inject an embedder and an
HTTP transport standing in for vLLM; `fedrouter serve` passes neither. What an unauthenticated
client can reach: the two generation routes, /v1/models and /metrics (unless API keys are
configured), /health (status only); no docs, no schema, nothing that names a path, a backend URL
or a vLLM-side name.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from fedrouter.router.embed import Embedder
from fedrouter.router.release import load_release
from fedrouter.serving.admin_routes import AdminGate, build_admin_router
from fedrouter.serving.auth import ApiKeys
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.edge import EdgeHeaders
from fedrouter.serving.errors import CatchAll, GatewayError, install_error_handlers
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.openai_routes import build_openai_router
from fedrouter.serving.registry import Registry
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
    token = settings.token()
    keys = ApiKeys.from_settings(settings)
    metrics = GatewayMetrics()
    registry = Registry(metrics)
    supervisor = None
    urls, api_key = list(settings.backends), settings.vllm_api_key
    if not urls:
        api_key = api_key or secrets.token_urlsafe(32)  # only this gateway will know it
        supervisor = VLLMSupervisor(
            settings.vllm_host,
            settings.vllm_port,
            settings.vllm_args,
            settings.vllm_kv_cache_gib,
            settings.vllm_log,
            api_key,
            settings.restart_backoff_max_s,
        )
        urls = [supervisor.url]
    pool = BackendPool(
        urls,
        api_key=api_key,
        request_timeout_s=settings.request_timeout_s,
        connect_retry_s=settings.connect_retry_s,
        transport=transport,
        policy=settings.replica_policy,
        load_factor=settings.affinity_load_factor,
        register_concurrency=settings.register_concurrency,
    )
    # /metrics is public: replicas are labelled by position, not URL (/admin/health maps them)
    replica = {b.url: f"replica-{i}" for i, b in enumerate(pool.backends)}
    pool.on_error = lambda url: metrics.backend_errors.labels(replica[url]).inc()
    pool.on_pick = lambda url, placement: metrics.backend_requests.labels(replica[url], placement).inc()
    for b in pool.backends:
        metrics.backend_inflight.labels(replica[b.url]).set_function(lambda b=b: b.inflight)

    max_rank = vllm_lora_rank(release.manifest.lora.r) if supervisor is not None else None
    reloader = Reloader(
        registry,
        pool,
        metrics,
        max_batch=settings.max_batch,
        max_lora_rank=max_rank,
        drain_timeout_s=settings.drain_timeout_s,
        reload_timeout_s=settings.reload_timeout_s,
        route_max_chars=settings.route_max_chars,
        route_timeout_s=settings.route_timeout_s,
        embed_device=settings.embed_device,
        embed_backend=settings.embed_backend,
        embed_threads=settings.embed_threads,
        embedder=embedder,
    )

    async def restart_vllm() -> None:
        """Restart the supervised vLLM with the flags it started with, after a capped backoff."""
        assert supervisor is not None
        delay = supervisor.restart_delay()
        code = supervisor.process.poll() if supervisor.process else None
        log.error("vLLM exited (code %s); restarting in %.0f s\n%s", code, delay, supervisor.log_tail(15))
        supervisor.stop()  # its whole process group: no engine process is left behind
        await asyncio.sleep(delay)
        supervisor.restarts += 1
        supervisor.failures += 1
        supervisor.start()
        await asyncio.to_thread(supervisor.wait_healthy, settings.vllm_start_timeout_s)
        log.info("vLLM is back")

    async def keep_backends() -> None:
        """Restart a dead supervised vLLM; register the current adapters in any replica that lacks them."""
        up_since = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            try:
                if supervisor is not None and not supervisor.alive():
                    await restart_vllm()
                    up_since = time.monotonic()
                elif supervisor is not None and time.monotonic() - up_since > 60:
                    supervisor.failures = 0  # stayed up: the next crash restarts at once again
                await pool.refresh()
                served = registry.current
                if pool.lacking(set(served.adapters.values())):
                    log.warning("a vLLM replica lacks release %s's adapters; registering them", served.id)
                    await pool.register(served.backend_names())
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("keeping the backends up failed (%s); trying again", getattr(e, "detail", None) or e)

    async def watch_release() -> None:
        """--watch: reload when the release path (typically `releases/latest`) points elsewhere.
        A target that fails to load is tried again at every interval (it may be completed later)."""
        assert settings.release is not None
        seen = registry.current.release.path
        refused: dict[Path, str] = {}
        while True:
            await asyncio.sleep(settings.watch_interval_s)
            try:
                now = Path(settings.release).resolve()
                if now == seen or not now.is_dir():
                    continue
                log.info("watch: %s now points at %s", settings.release, now)
                await reloader.load(now)
                seen = now
                refused.pop(now, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                message = getattr(e, "message", None) or repr(e)
                if refused.get(now) != message:  # say it once per target and reason
                    log.error("watch: release %s refused (will try again): %s", now, message)
                refused[now] = message

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

    # No /docs, /redoc or /openapi.json: the schema is served at /admin/openapi.json (with the token).
    app = FastAPI(title="fedrouter gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry, app.state.pool, app.state.metrics = registry, pool, metrics
    app.state.supervisor, app.state.reloader = supervisor, reloader
    app.state.openapi = lambda: gateway_openapi(app)
    install_error_handlers(app)
    app.add_middleware(AdminGate, token=token)
    app.add_middleware(CatchAll)
    app.add_middleware(EdgeHeaders, release_id=lambda: _serving_id(registry))
    app.include_router(build_openai_router(registry, pool, metrics, settings, keys))
    if token:
        app.include_router(build_admin_router(registry, reloader, pool, token, app.state.openapi))

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        """Up or not, nothing more (the backends' state is refreshed every second by the keeper).
        HEAD answers the same status without a body (load balancers' probes)."""
        try:
            up = registry.current is not None and any(b.healthy for b in pool.backends)
        except GatewayError:
            up = False
        if up:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, status_code=503, headers={"retry-after": "2"})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        keys.check_sees_everything(request)  # with API keys: its labels name every adapter
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _serving_id(registry: Registry) -> str | None:
    """The release being served, or None before the first one is installed."""
    try:
        return registry.current.id
    except GatewayError:
        return None


def gateway_openapi(app: FastAPI) -> dict:
    """The public OpenAPI schema (admin routes left out), with the request bodies' definitions."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict):
                components.update(op.pop("x-components", {}))
    return schema
