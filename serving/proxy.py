"""Forward one OpenAI request to vLLM for a resolved `Target`, streaming or not.

The request body goes to vLLM unchanged except for `model` (the vLLM name); vLLM validates
every other field. In the answer, `model` is rewritten to the public name, and the routing
decision is reported in `x-fedrouter-*` headers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable, error_body
from fedrouter.serving.registry import Target


def routing_headers(target: Target) -> dict[str, str]:
    h = {"x-fedrouter-adapter": target.public, "x-fedrouter-release": target.release_id}
    if target.route is not None:
        h["x-fedrouter-score"] = f"{target.route.score:.4f}"
    return h


async def forward(pool: BackendPool, path: str, body: dict[str, Any], target: Target) -> Response:
    body = {**body, "model": target.backend}
    headers = routing_headers(target)
    if body.get("stream"):
        return await _forward_stream(pool, path, body, target, headers)
    async with pool.request("POST", path, body) as r:  # read whole inside the pool's retry
        if r.status_code != 200:
            return _backend_error(r, headers)
        try:
            payload = r.json()
        except ValueError:
            raise BackendUnavailable(f"vLLM answered {path} with something that is not JSON") from None
    if isinstance(payload, dict) and "model" in payload:
        payload["model"] = target.public
    return JSONResponse(payload, headers=headers)


async def _forward_stream(
    pool: BackendPool, path: str, body: dict[str, Any], target: Target, headers: dict[str, str]
) -> Response:
    stack = AsyncExitStack()
    r = await stack.enter_async_context(pool.request("POST", path, body, stream=True))
    if r.status_code != 200:
        try:
            await r.aread()
            return _backend_error(r, headers)
        finally:
            await stack.aclose()
    # vLLM writes compact JSON; backend names are safe names, so no escaping can hide them.
    old = [f'"model":"{target.backend}"'.encode(), f'"model": "{target.backend}"'.encode()]
    new = f'"model":"{target.public}"'.encode()

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for line in r.aiter_lines():
                data = line.encode()
                for o in old:
                    data = data.replace(o, new)
                yield data + b"\n"
        except httpx.HTTPError as e:  # vLLM went away mid-answer: say so in the stream
            err = error_body(503, f"vLLM backend failed during the stream: {type(e).__name__}", "service_unavailable")
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        finally:
            await stack.aclose()  # also when the client disconnects: vLLM then aborts the request

    return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)


def _backend_error(r: httpx.Response, headers: dict[str, str]) -> Response:
    """vLLM's 4xx are the client's fault and already in OpenAI's shape; pass them on. Anything
    else is the backend's fault: 503."""
    if 400 <= r.status_code < 500 and r.status_code != 404:
        try:
            payload = r.json()
            if isinstance(payload, dict) and "error" in payload:
                return JSONResponse(payload, status_code=r.status_code, headers=headers)
        except ValueError:
            pass
        return JSONResponse(
            error_body(r.status_code, r.text[:500], "invalid_request_error"), status_code=r.status_code, headers=headers
        )
    # 404 from vLLM means the adapter is not loaded there: the gateway's state, not the client's.
    return JSONResponse(
        error_body(503, f"vLLM answered {r.status_code}: {r.text[:300]}", "service_unavailable"),
        status_code=503,
        headers=headers,
    )
