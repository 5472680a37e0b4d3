"""OpenAI-compatible routes: parse, resolve the model, forward. Nothing else happens here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BadRequest, GatewayError, Overloaded
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.proxy import forward
from fedrouter.serving.registry import AUTO, Registry


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def last_user_text(body: dict[str, Any]) -> Callable[[], str | None]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a non-empty list of message objects", "messages")

    def text() -> str | None:
        for m in reversed(messages):
            if m.get("role") != "user":
                continue
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts: route on the text ones
                parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
                return "\n".join(parts) if parts else None
        return None

    return text


def prompt_text(body: dict[str, Any]) -> Callable[[], str | None]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > 1 and body.get("model") == AUTO:
            raise BadRequest("model='auto' routes one prompt per request; send the prompts separately", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        return lambda: prompt
    if isinstance(prompt, list) and prompt:  # token ids: forwardable, not routable
        return lambda: None
    raise BadRequest("'prompt' must be a string or a list of strings", "prompt")


async def _finally(chunks: AsyncIterator[bytes], done: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        done()


def build_openai_router(registry: Registry, pool: BackendPool, metrics: GatewayMetrics, max_inflight: int) -> APIRouter:
    api = APIRouter()
    inflight = 0

    async def handle(
        request: Request, path: str, text_of: Callable[[dict[str, Any]], Callable[[], str | None]]
    ) -> Response:
        nonlocal inflight
        if inflight >= max_inflight:
            raise Overloaded(f"the gateway is at its limit of {max_inflight} requests in flight; retry shortly")
        inflight += 1
        metrics.inflight.inc()
        adapter, selection, status = "", "explicit", 500
        try:
            body = await read_body(request)
            selection = "auto" if body.get("model") == AUTO else "explicit"
            target = await registry.resolve(body.get("model"), text_of(body))
            adapter = target.public
            try:
                response = await forward(pool, path, body, target)
            except BaseException:
                target.done()
                raise
            status = response.status_code
            if isinstance(response, StreamingResponse):
                response.body_iterator = _finally(response.body_iterator, target.done)
            else:
                target.done()
            return response
        except GatewayError as e:
            status = e.status
            raise
        finally:
            inflight -= 1
            metrics.inflight.dec()
            metrics.requests.labels(adapter or "-", selection, str(status)).inc()

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await handle(request, "/v1/chat/completions", last_user_text)

    @api.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await handle(request, "/v1/completions", prompt_text)

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        served = registry.current
        created = 0
        data = [
            {
                "id": AUTO,
                "object": "model",
                "created": created,
                "owned_by": "fedrouter",
                "root": AUTO,
                "parent": served.base_public,
                "description": "routed to the nearest task adapter",
            },
            {
                "id": served.base_public,
                "object": "model",
                "created": created,
                "owned_by": "fedrouter",
                "root": served.release.manifest.base_model.path,
                "parent": None,
            },
        ]
        data += [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "fedrouter",
                "root": name,
                "parent": served.base_public,
            }
            for name in served.adapters
        ]
        return {"object": "list", "data": data}

    return api
