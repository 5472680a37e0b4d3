"""Headers on every answer, whatever produced it (a route, an error handler, the 500 of `CatchAll`).

- `x-request-id`: the client's own when it is a plausible id (1–128 characters of
  `A-Z a-z 0-9 . _ : - + = /`), else a new one (32 hex digits); the gateway's log lines about a
  failed request (a 503's cause, an unexpected 500) name it. Not forwarded to vLLM (which would take a client's id as its own request id).
- `x-fedrouter-release`: the release that answered. A routed answer sets it from the release its
  request was pinned to; any other answer (an error, a 503 before routing, /health, /v1/models)
  gets the release being served then, when one is loaded.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID = b"x-request-id"
RELEASE = b"x-fedrouter-release"
_PLAUSIBLE_ID = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")


def request_id(given: bytes | None) -> bytes:
    """The id to answer with: the client's when plausible, else a fresh one."""
    if given is not None and _PLAUSIBLE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex.encode()


class EdgeHeaders:
    """Outermost ASGI layer: adds the two headers to every HTTP answer's start."""

    def __init__(self, app: ASGIApp, release_id: Callable[[], str | None]):
        self.app, self._release_id = app, release_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id(next((v for k, v in scope.get("headers", ()) if k == REQUEST_ID), None))
        scope.setdefault("state", {})["request_id"] = rid.decode()

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID]
                headers.append((REQUEST_ID, rid))
                if not any(k.lower() == RELEASE for k, _ in headers):
                    release = self._release_id()
                    if release is not None:
                        headers.append((RELEASE, release.encode("latin-1", "replace")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)
