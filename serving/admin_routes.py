"""Admin routes (bearer token; absent when no token is configured): reload, rollback, inspect.

Everything internal is here and only here: release paths and digests, vLLM names, backend URLs
and health, the OpenAPI schema. None of these routes appears in the public schema, and without the
token every /admin path answers exactly as a path that does not exist (404): `AdminGate`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from fedrouter.serving.backends import BackendPool
from fedrouter.serving.body import read_json
from fedrouter.serving.errors import BadRequest, Unauthorized, error_response
from fedrouter.serving.registry import Registry
from fedrouter.serving.reload import Reloader

MAX_PATH_CHARS = 4096


def build_admin_router(
    registry: Registry, reloader: Reloader, pool: BackendPool, token: str, openapi: Callable[[], dict]
) -> APIRouter:
    api = APIRouter(prefix="/admin", include_in_schema=False)
    expected = f"Bearer {token}".encode()

    def check(request: Request) -> None:
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("admin routes need 'Authorization: Bearer <admin token>'")

    @api.post("/reload")
    async def reload(request: Request) -> dict[str, Any]:
        check(request)
        body = await read_json(request, 64 * 1024, 30.0)
        path = body.get("release")
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
            raise BadRequest(
                f"'release' must be the path of a release folder on the gateway's machine (at most {MAX_PATH_CHARS} characters)",
                "release",
            )
        return await reloader.load(path)

    @api.post("/rollback")
    async def rollback(request: Request) -> dict[str, Any]:
        check(request)
        return await reloader.rollback()

    @api.get("/release")
    async def current(request: Request) -> dict[str, Any]:
        check(request)
        served = registry.current
        m = served.release.manifest
        return {
            "release": served.id,
            "digest": served.digest,
            "path": str(served.release.path),
            "created": m.created,
            "adapters": list(m.adapters),
            "vllm_names": {**served.adapters, served.base_public: served.base_backend},
            "base_model": m.base_model.name,
            "embedder": m.embedder.name,
            "training": {k: m.training.get(k) for k in ("strategy", "rounds", "scenario") if k in m.training},
            "previous": str(reloader.previous) if reloader.previous else None,
            "inflight": served.inflight,
        }

    @api.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        check(request)
        return {
            "release": registry.current.id,
            "backends": [
                {
                    "replica": f"replica-{i}",
                    "url": b.url,
                    "healthy": b.healthy,
                    "inflight": b.inflight,
                    "served": sorted(b.served),
                }
                for i, b in enumerate(pool.backends)
            ],
        }

    @api.get("/openapi.json")
    async def schema(request: Request) -> dict[str, Any]:
        check(request)
        return openapi()

    return api


class AdminGate:
    """ASGI layer: a request under /admin without the right bearer token gets the same 404 as an
    unknown path (whatever its method), so an unauthenticated client cannot tell the routes exist."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/admin" or path.startswith("/admin/")):
            given = dict(scope.get("headers", ())).get(b"authorization", b"")
            if self._expected is None or not hmac.compare_digest(given, self._expected):
                await error_response(404, "Not Found", "not_found_error")(scope, receive, send)
                return
        await self.app(scope, receive, send)
