"""Forward one checked OpenAI request to vLLM for a resolved `Target`, streaming or not.

The body goes to vLLM as the client sent it except for `model` (the vLLM name), serialised once
with orjson. The answer is passed through as bytes: the only edit is `model` -> the public name,
done on the bytes (vLLM writes compact JSON and vLLM names are safe identifiers, so the first
`"model":"<vLLM name>"` is the field, never text inside a string, where quotes are escaped).
The adapter and release that answered are in `x-fedrouter-adapter` / `x-fedrouter-release`; the
routing score and mode (`x-fedrouter-score`, `x-fedrouter-routing`) only when the operator exposes
them (GatewaySettings.expose_routing_headers): scores let a client map the private centroids.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
from fastapi.responses import Response, StreamingResponse

from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable, error_body, error_response
from fedrouter.serving.registry import Target

log = logging.getLogger("fedrouter.serving")
_FAILED = "the model backend failed while answering; retry"


def routing_headers(target: Target, expose: bool = False) -> dict[str, str]:
    h = {"x-fedrouter-adapter": target.public, "x-fedrouter-release": target.release_id}
    if not expose:
        return h
    if target.route is not None:
        h["x-fedrouter-score"] = f"{target.route.score:.4f}"
    if target.routing is not None:
        h["x-fedrouter-routing"] = target.routing
    return h


def rewrite_model(data: bytes, target: Target) -> bytes:
    """`"model":"<vLLM name>"` -> the public name, in the first place it occurs (the field)."""
    old = b'"model":"' + target.backend.encode() + b'"'
    if old in data:
        return data.replace(old, b'"model":"' + target.public.encode() + b'"', 1)
    try:  # not vLLM's compact form: parse, set, write (rare)
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if isinstance(payload, dict) and "model" in payload:
        payload["model"] = target.public
        return orjson.dumps(payload)
    return data


async def forward(
    pool: BackendPool, path: str, body: dict[str, Any], target: Target, stream: bool, *, expose: bool = False
) -> Response:
    content = orjson.dumps({**body, "model": target.backend})
    headers = routing_headers(target, expose)
    if stream:
        return await _forward_stream(pool, path, content, target, headers)
    async with pool.request("POST", path, content, model=target.backend) as r:
        try:
            data = await r.aread()
        except httpx.HTTPError as e:
            raise BackendUnavailable(_FAILED, repr(e)) from None
        if r.status_code != 200:
            return _backend_error(r.status_code, data, target, headers)
    return Response(rewrite_model(data, target), media_type="application/json", headers=headers)


async def _forward_stream(
    pool: BackendPool, path: str, content: bytes, target: Target, headers: dict[str, str]
) -> Response:
    stack = AsyncExitStack()
    r = await stack.enter_async_context(pool.request("POST", path, content, model=target.backend))
    if r.status_code != 200:
        try:
            return _backend_error(r.status_code, await r.aread(), target, headers)
        except httpx.HTTPError as e:
            raise BackendUnavailable(_FAILED, repr(e)) from None
        finally:
            await stack.aclose()
    old = f'"model":"{target.backend}"'.encode()
    new = f'"model":"{target.public}"'.encode()
    failed = False

    async def relay() -> AsyncIterator[bytes]:
        nonlocal failed
        try:
            async for line in r.aiter_lines():
                yield line.encode().replace(old, new, 1) + b"\n"
        except httpx.HTTPError:  # vLLM went away mid-answer: say so in the stream, then end it as SSE does
            failed = True
            yield b"data: " + orjson.dumps(error_body(503, _FAILED, "service_unavailable")) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            await stack.aclose()  # also when the client disconnects: vLLM then aborts the request

    response = StreamingResponse(relay(), media_type="text/event-stream", headers=headers)
    response.relay_failed = lambda: failed  # read by the request's lifetime for its status
    return response


def _backend_error(status: int, data: bytes, target: Target, headers: dict[str, str]) -> Response:
    """vLLM's 4xx are the client's fault: passed on in OpenAI's shape, with the vLLM name replaced
    by the public one. Except 401/403 (vLLM refused the gateway's own key: the client's key, if
    any, was checked here) and 404 (the adapter is not loaded there): those and anything else
    are the backend's, a 503 that says nothing internal."""
    if 400 <= status < 500 and status not in (401, 403, 404):
        try:
            err = orjson.loads(data).get("error", {})
            message = str(err.get("message", ""))
            param = err.get("param") if isinstance(err.get("param"), str) else None
        except (orjson.JSONDecodeError, AttributeError):
            message, param = data[:300].decode("utf-8", "replace"), None
        message = message.replace(target.backend, target.public)[:1000] or f"the request was refused ({status})"
        return error_response(status, message, "invalid_request_error", param, "invalid_request", headers=headers)
    log.warning("vLLM answered %s for %s: %r", status, target.backend, data[:300])
    e = BackendUnavailable(f"model {target.public!r} is not available right now; retry shortly")
    return error_response(503, e.message, e.type, None, e.code, retry_after=e.retry_after, headers=headers)
