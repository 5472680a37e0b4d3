"""OpenAI-compatible routes: read and check the request at the edge, resolve the model, forward.

Every generation request passes the same steps, whatever its `model` (auto, adapter, base):
API key (serving/auth.py) -> bounded strict-JSON body -> schema (serving/schema.py) -> in-flight
slot -> resolve -> forward, inside one `RequestLifetime`. Nothing else happens here.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fedrouter.serving.auth import ApiKeys
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.body import BodyBudget, read_json
from fedrouter.serving.errors import ModelNotFound
from fedrouter.serving.lifetime import RequestLifetime, Slots, unless_client_leaves
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.proxy import forward
from fedrouter.serving.registry import AUTO, Registry, ServedRelease
from fedrouter.serving.schema import ChatRequest, CompletionRequest, Limits, Sampling, parse
from fedrouter.serving.settings import GatewaySettings


def _body_schema(model: type[Sampling]) -> dict[str, Any]:
    """OpenAPI for a body the route reads itself (the schema is still the one `parse` checks)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "x-components": defs,  # moved into components.schemas by app.gateway_openapi
    }


def build_openai_router(
    registry: Registry, pool: BackendPool, metrics: GatewayMetrics, settings: GatewaySettings, keys: ApiKeys
) -> APIRouter:
    api = APIRouter()
    slots = Slots(settings.max_inflight)
    budget = BodyBudget(settings.body_budget_bytes)
    limits = Limits(settings.max_n, settings.max_tokens, settings.max_logprobs, settings.max_request_tokens)
    expose = settings.expose_routing_headers

    async def handle(request: Request, path: str, schema: type[Sampling]) -> Response:
        async with RequestLifetime(slots, metrics) as life:
            caller = keys.caller(request)  # 401 before reading anything
            body = await read_json(request, settings.max_body_bytes, settings.body_timeout_s, budget)
            req = parse(schema, body, limits)
            life.selection = "auto" if req.model == AUTO else "explicit"
            life.take_slot()  # only now: a slow client holds a connection, never a slot
            client = keys.client(request, caller, req.user)
            life.pin(await registry.resolve(req.model, req.route_text, client, caller.adapters))
            assert life.target is not None
            work = forward(pool, path, body, life.target, req.streaming, expose=expose)
            return life.respond(await unless_client_leaves(request, work))

    @api.post("/v1/chat/completions", openapi_extra=_body_schema(ChatRequest))
    async def chat_completions(request: Request) -> Response:
        return await handle(request, "/v1/chat/completions", ChatRequest)

    @api.post("/v1/completions", openapi_extra=_body_schema(CompletionRequest))
    async def completions(request: Request) -> Response:
        return await handle(request, "/v1/completions", CompletionRequest)

    @api.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        caller = keys.caller(request)
        return {"object": "list", "data": model_cards(registry.current, caller.adapters)}

    @api.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> dict[str, Any]:
        caller = keys.caller(request)
        served = registry.current
        for card in model_cards(served, caller.adapters):
            if card["id"] == model_id:
                return card
        raise ModelNotFound(model_id, served.public_models(caller.adapters))

    return api


def model_cards(served: ServedRelease, allowed: Set[str] | None = None) -> list[dict[str, Any]]:
    """`auto`, the base model and every adapter (the caller may use), by public name only (no
    paths, no vLLM names)."""

    def card(name: str, parent: str | None) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "fedrouter", "root": name, "parent": parent}

    cards = [{**card(AUTO, served.base_public), "description": "routed to the nearest task adapter"}]
    cards.append(card(served.base_public, None))
    cards += [card(name, served.base_public) for name in served.adapters if allowed is None or name in allowed]
    return cards
