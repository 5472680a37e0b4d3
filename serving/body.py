"""Reading a request body at the edge: bounded in size and time, strict JSON, a JSON object.

Strict JSON is orjson's: NaN, Infinity, numbers that overflow a double, lone surrogates, invalid
UTF-8 and nesting deeper than 1024 are refused (400) before any of it reaches Python code.
The bodies being read at once share one byte budget (`BodyBudget`): a body whose bytes would take
it past its total is refused at once (429, Retry-After) rather than queued. It counts the bytes
received, not the Content-Length declared: a declared length costs nothing to send, and counted up
front a few idle connections declaring the largest body locked every other request out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from fedrouter.serving.errors import BadRequest, ClientGone, Overloaded, PayloadTooLarge, RequestTimeout


class BodyBudget:
    """Bytes of request bodies being read (and parsed) at once, across all requests of one app.
    A read reserves what it has received so far and gives it back when the body is parsed or
    refused, or the read ends any other way."""

    def __init__(self, total_bytes: int):
        self.total, self.used = total_bytes, 0

    def take(self, n: int) -> None:
        if self.used + n > self.total:
            raise Overloaded(
                "the gateway is reading too many request bodies at once; retry shortly", None, "server_busy"
            )
        self.used += n


async def read_json(
    request: Request, max_bytes: int, timeout_s: float, budget: BodyBudget | None = None
) -> dict[str, Any]:
    """The body as a JSON object. 413 past `max_bytes` (checked as it arrives, not only from
    Content-Length), 429 past the shared `budget`, 408 if it takes longer than `timeout_s`, 400 if
    it is not a JSON object."""
    budget = budget or BodyBudget(max_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise PayloadTooLarge(f"the request body is larger than this server's limit of {max_bytes} bytes")
    held = 0

    async def read() -> bytes:
        nonlocal held
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the request body is larger than this server's limit of {max_bytes} bytes")
            budget.take(len(chunk))
            held = size
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        try:
            raw = await asyncio.wait_for(read(), timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request body took longer than {timeout_s:.0f} s to arrive") from None
        except ClientDisconnect:
            raise ClientGone() from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"the request body is not valid JSON: {e}"[:300], None, "invalid_json") from None
    finally:
        budget.used -= held
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", None, "invalid_json")
    return body
