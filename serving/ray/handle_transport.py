"""The gateway's way to the engines on Ray: an httpx transport over a Serve DeploymentHandle.

The single-machine gateway (serving/app.py) talks to vLLM over HTTP through one httpx transport;
on Ray the same gateway code runs unchanged with this transport in its place, so the request path
(schema, limits, errors, routing, release pinning, hot swap and drain, metrics) is one code path
for both. What it answers:

- `POST /v1/chat/completions`, `/v1/completions` -> an engine replica, through the handle with the
  adapter's content name as multiplexed model id (the engines' request router sends it to the
  adapter's home; the base model has none and spreads), the adapter folder beside it; a streamed
  request is streamed through (`generate`), any other is one unary call (`complete`: Ray moves one
  object instead of one per item);
- `POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter` -> this ingress's name -> folder map only:
  engines load an adapter on its first request and unload it when Serve evicts it, so an ingress
  never unloads what another ingress (still draining an older release) uses. With the folder goes
  a reference to the adapter's bytes in Ray's object store (put once per adapter by this ingress):
  an engine on a node where the folder is not (no shared filesystem) fetches them from there into
  its own node's store (serving/ray/engine.py);
- `GET /v1/models` -> the base model and the adapters this ingress registered.

Delivery: an error before the engine produced the answer's head is still a delivery failure
(httpx.ReadError): the gateway answers 503 and never sends the request again, since the engine
may have started generating. Serve itself queues a request until an engine replica is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

GENERATION = ("/v1/chat/completions", "/v1/completions")


def _payload(folder: str) -> list[Any] | None:
    """[ObjectRef of the files of the store folder `folder` (`<store>/<digest>/`)], or None outside
    a Ray cluster (Serve's local testing mode: one process, one filesystem)."""
    import ray

    if not ray.is_initialized():
        return None
    from fedrouter.serving.adapter_store import AdapterStore

    path = Path(folder)
    return [ray.put(AdapterStore(path.parent).files(path.name))]


class HandleStream(httpx.AsyncByteStream):
    """The rest of an engine's answer; closing it (the client went away) cancels the engine call."""

    def __init__(self, gen: Any):
        self._gen = gen
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._gen:
                yield chunk
            self._done = True
        except httpx.HTTPError:
            raise
        except Exception as e:  # the engine replica died or failed mid-answer
            raise httpx.ReadError(f"engine failed mid-answer: {e!r}"[:500]) from None

    async def aclose(self) -> None:
        if not self._done:
            self._gen.cancel()
            self._done = True


class HandleTransport(httpx.AsyncBaseTransport):
    doors = False  # whether the engines open doors for it (serving/ray/door.py)

    @classmethod
    def for_gateway(cls, engine: Any, base_model: str, keys: list[str], settings: Any) -> HandleTransport:
        """The transport of an ingress's gateway: `keys` (the starting release's content names) and
        `settings` (GatewaySettings) are for the variants that place requests themselves."""
        return cls(engine, base_model)

    def __init__(self, engine: Any, base_model: str):
        self._engine = engine  # a DeploymentHandle to the engine deployment
        self._base = base_model  # the engines serve the base model under this name
        self.adapters: dict[str, str] = {}  # content name -> adapter folder
        # content name -> [ObjectRef of the adapter's files]: a list, so that Ray passes the
        # reference and an engine fetches the bytes only when it lacks the folder
        self.payloads: dict[str, list[Any]] = {}
        self._handles: dict[tuple[str, bool], Any] = {}  # (model id, streamed) -> handle, made once

    def _handle(self, model_id: str, stream: bool) -> Any:
        key = (model_id, stream)
        handle = self._handles.get(key)
        if handle is None:
            if len(self._handles) > 4096:  # names of retired releases
                self._handles.clear()
            method = "generate" if stream else "complete"
            handle = self._engine.options(stream=stream, multiplexed_model_id=model_id, method_name=method)
            self._handles[key] = handle
        return handle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in GENERATION:
            return await self._generate(request, path)
        if path == "/v1/models":
            data = [{"id": self._base, "object": "model", "parent": None}]
            data += [{"id": n, "object": "model", "parent": self._base} for n in self.adapters]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = orjson.loads(await request.aread())
        if path == "/v1/load_lora_adapter":
            self.adapters[body["lora_name"]] = body["lora_path"]
            payload = await asyncio.to_thread(_payload, body["lora_path"])
            if payload is not None:
                self.payloads[body["lora_name"]] = payload
            return httpx.Response(200, text="registered with the ingress; engines load it on first use")
        if path == "/v1/unload_lora_adapter":
            self.adapters.pop(body["lora_name"], None)
            self.payloads.pop(body["lora_name"], None)
            return httpx.Response(200, text="forgotten by this ingress; engines evict it when they need room")
        return httpx.Response(404, json={"error": {"message": f"no route {path}", "type": "NotFoundError"}})

    async def _generate(self, request: httpx.Request, path: str) -> httpx.Response:
        content = await request.aread()
        req = orjson.loads(content)
        model = req.get("model", "")
        folder = self.adapters.get(model)
        adapter = model if folder is not None else None  # the base model has no model id: any replica
        payload = self.payloads.get(model) if adapter else None
        if not req.get("stream"):  # one unary call: head and body together
            response = self._handle(adapter or "", False).remote(path, content, adapter, folder, payload)
            try:
                head, body = await response
            except Exception as e:  # delivered or not, unknown: never sent again
                raise httpx.ReadError(f"engine call failed: {e!r}"[:500]) from None
            except BaseException:  # cancelled (the client went away): so is the engine call
                response.cancel()
                raise
            return httpx.Response(head["status"], headers={"content-type": head["content-type"]}, content=body)
        gen = self._handle(adapter or "", True).remote(path, content, adapter, folder, payload)
        try:
            head = await gen.__anext__()
        except StopAsyncIteration:
            raise httpx.ReadError("the engine answered nothing") from None
        except Exception as e:  # delivered or not, unknown: never sent again
            gen.cancel()
            raise httpx.ReadError(f"engine call failed: {e!r}"[:500]) from None
        except BaseException:  # cancelled (the client went away): so is the engine call
            gen.cancel()
            raise
        headers = {"content-type": head["content-type"]}
        return httpx.Response(head["status"], headers=headers, stream=HandleStream(gen), request=request)
