"""Domain errors of the gateway and the one place that turns any error into OpenAI's shape.

`{"error": {"message", "type", "param", "code"}}` with `code` a string; never a traceback, never
a path, a backend URL or a vLLM-side name (those go to the log). 429 and 503 carry Retry-After.
An exception nobody expected is still answered (500, logged) without closing the client's
keep-alive connection: `CatchAll` sits outside every other layer and never re-raises.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fedrouter.serving")


class GatewayError(Exception):
    status = 500
    type = "internal_error"
    code = "internal_error"
    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init__(
        self, message: str, param: str | None = None, code: str | None = None, *, retry_after: int | None = None
    ):
        super().__init__(message)
        self.message, self.param = message, param
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


class BadRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class Unauthorized(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_token"


class ModelNotFound(GatewayError):
    status, type, code = 404, "not_found_error", "model_not_found"

    def __init__(self, model: str, known: list[str]):
        shown = model if len(model) <= 100 else model[:100] + "..."
        super().__init__(f"model {shown!r} does not exist; available: {', '.join(known)}", "model")


class RequestTimeout(GatewayError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class Overloaded(GatewayError):
    status, type, code, retry_after = 429, "rate_limit_error", "rate_limit_exceeded", 1


class BackendUnavailable(GatewayError):
    """The model backend cannot answer now. `message` is what the client sees; say nothing internal
    in it: put URLs and vLLM names in `detail`, which is only logged (or shown to the admin)."""

    status, type, code, retry_after = 503, "service_unavailable", "backend_unavailable", 2

    def __init__(self, message: str, detail: str = "", **kw):
        super().__init__(message, **kw)
        self.detail = detail


class ClientGone(Exception):
    """The client closed its connection: nothing is sent; the request's work is cancelled."""


def error_body(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code or type_}}


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    *,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    h = dict(headers or {})
    if retry_after is not None:
        h["retry-after"] = str(retry_after)
    body = orjson.dumps(error_body(status, message, type_, param, code))
    return Response(body, status_code=status, media_type="application/json", headers=h)


def request_id_of(scope: Scope) -> str:
    """The request's id (set by serving/edge.py's `EdgeHeaders`), for log lines about it."""
    return scope.get("state", {}).get("request_id", "-")


def gateway_error_response(e: GatewayError, headers: dict[str, str] | None = None, request_id: str = "-") -> Response:
    if isinstance(e, BackendUnavailable) and e.detail:
        log.warning("503 %s (%s) request %s", e.message, e.detail, request_id)
    return error_response(e.status, e.message, e.type, e.param, e.code, retry_after=e.retry_after, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(request: Request, e: GatewayError) -> Response:
        return gateway_error_response(e, request_id=request_id_of(request.scope))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(400, f"{first.get('msg', 'invalid request')}", "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> Response:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(e.status_code, str(e.detail), kind, headers=e.headers)


class CatchAll:
    """Outermost ASGI layer: an unexpected exception becomes a logged 500 and the connection stays
    open (Starlette's own error layer re-raises to the server, which then drops the connection)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientGone:
            pass  # nobody is left to answer
        except Exception:
            log.exception(
                "unexpected error on %s %s request %s",
                scope.get("method"),
                scope.get("path", "")[:200],
                request_id_of(scope),
            )
            if not started:
                response = error_response(500, "internal error in the gateway (logged on the server)", "internal_error")
                await response(scope, receive, send)
