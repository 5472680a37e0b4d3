"""The gateway application: `create_app(settings)` wires release, router, vLLM and routes.

No module-level state: everything lives in the app built here. Tests inject an embedder and an
HTTP transport standing in for vLLM; `fedrouter serve` passes neither. What an unauthenticated
client can reach: the two generation routes, /v1/models and /metrics (unless API keys are
configured), /health (status only); no docs, no schema, nothing that names a path, a backend URL
or a vLLM-side name.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from fedrouter.router.embed import Embedder
from fedrouter.router.release import load_release
from fedrouter.serving.adapter_store import AdapterStore
from fedrouter.serving.admin_routes import AdminGate, build_admin_router
from fedrouter.serving.attach_check import check_attached
from fedrouter.serving.auth import ApiKeys
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.edge import EdgeHeaders
from fedrouter.serving.errors import CatchAll, GatewayError, install_error_handlers
from fedrouter.serving.loader import AdapterLoader
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.openai_routes import build_openai_router
from fedrouter.serving.registry import Registry
from fedrouter.serving.reload import Reloader
from fedrouter.serving.settings import GatewaySettings
from fedrouter.serving.supervision import Supervision
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
    if settings.route_only and not urls:
        raise ValueError("route-only mode routes to a platform that owns the adapters: give its URL with --backend")
    if not urls:
        api_key = api_key or secrets.token_urlsafe(32)  # only this gateway will know it
        supervisor = VLLMSupervisor(
            settings.vllm_port,
            settings.vllm_args,
            settings.vllm_kv_cache_gib,
            settings.vllm_log,
            api_key,
            settings.restart_backoff_max_s,
            max_new_tokens=settings.max_tokens,
        )
        urls = [supervisor.url]
    pool = BackendPool(urls, settings, api_key=api_key, transport=transport)
    # /metrics is public: replicas are labelled by position, not URL (/admin/health maps them)
    replica = {b.url: f"replica-{i}" for i, b in enumerate(pool.backends)}
    pool.on_error = lambda url: metrics.backend_errors.labels(replica[url]).inc()
    pool.on_pick = lambda url, placement: metrics.backend_requests.labels(replica[url], placement).inc()
    for b in pool.backends:
        metrics.backend_inflight.labels(replica[b.url]).set_function(lambda b=b: b.inflight)

    reloader = Reloader(
        registry,
        pool,
        # unloading only from replicas no other gateway uses: its own vLLM, or declared its own
        AdapterLoader(
            pool,
            concurrency=settings.register_concurrency,
            unloads=(supervisor is not None or settings.sole_gateway) and not settings.route_only,
        ),
        AdapterStore(settings.adapter_store),
        metrics,
        settings,
        max_lora_rank=vllm_lora_rank(release.manifest.lora.r) if supervisor is not None else None,
        embedder=embedder,
    )
    supervision = Supervision(settings, registry, pool, reloader, supervisor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            if settings.route_only:
                log.info("route-only: adapters and the backend's engine routes are the platform's to manage")
            elif supervisor is None and transport is None:  # attached to servers someone else runs
                await check_attached(pool.backends, settings.allow_open_backend)
            await supervision.start(release)
            yield
        finally:
            await supervision.stop()

    # No /docs, /redoc or /openapi.json: the schema is served at /admin/openapi.json (with the token).
    app = FastAPI(title="fedrouter gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry, app.state.pool, app.state.metrics = registry, pool, metrics
    app.state.supervisor, app.state.reloader, app.state.supervision = supervisor, reloader, supervision
    app.state.openapi = lambda: gateway_openapi(app)
    install_error_handlers(app)
    app.add_middleware(AdminGate, token=token)
    app.add_middleware(CatchAll)
    app.add_middleware(EdgeHeaders, release_id=lambda: _serving_id(registry))
    app.include_router(build_openai_router(registry, pool, metrics, settings, keys))
    if token:
        app.include_router(build_admin_router(registry, reloader, pool, token, app.state.openapi))

    @app.get("/health")
    @app.head("/health", include_in_schema=False)  # one operation in the schema, not two with one id
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
