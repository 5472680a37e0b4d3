"""Reading a request body at the edge: bounded in size and time, strict JSON, a JSON object.

Strict JSON is orjson's: NaN, Infinity, numbers that overflow a double, lone surrogates, invalid
UTF-8 and nesting deeper than 1024 are refused (400) before any of it reaches Python code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from fedrouter.serving.errors import BadRequest, ClientGone, PayloadTooLarge, RequestTimeout


async def read_json(request: Request, max_bytes: int, timeout_s: float) -> dict[str, Any]:
    """The body as a JSON object. 413 past `max_bytes` (checked as it arrives, not only from
    Content-Length), 408 if it takes longer than `timeout_s`, 400 if it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise PayloadTooLarge(f"the request body is larger than this server's limit of {max_bytes} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the request body is larger than this server's limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

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
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", None, "invalid_json")
    return body
