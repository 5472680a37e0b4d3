"""Admin routes (bearer token; absent when no token is configured): reload, rollback, inspect."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request

from fedrouter.serving.errors import BadRequest, Unauthorized
from fedrouter.serving.openai_routes import read_body
from fedrouter.serving.registry import Registry
from fedrouter.serving.reload import Reloader


def build_admin_router(registry: Registry, reloader: Reloader, token: str) -> APIRouter:
    api = APIRouter(prefix="/admin")

    def check(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("admin routes need 'Authorization: Bearer <FEDROUTER_ADMIN_TOKEN>'")

    @api.post("/reload")
    async def reload(request: Request) -> dict[str, Any]:
        check(request)
        body = await read_body(request)
        path = body.get("release")
        if not isinstance(path, str) or not path:
            raise BadRequest("'release' must be the path of a release folder on the gateway's machine", "release")
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
            "path": str(served.release.path),
            "created": m.created,
            "adapters": list(m.adapters),
            "base_model": m.base_model.name,
            "embedder": m.embedder.name,
            "training": {k: m.training.get(k) for k in ("strategy", "rounds", "scenario") if k in m.training},
            "previous": str(reloader.previous) if reloader.previous else None,
            "inflight": served.inflight,
        }

    return api
