"""The hot path's HTTP client: one aiohttp session (one keep-alive pool) per vLLM replica.

A request to a local server costs ~0.2 ms here against ~0.8 ms through httpx's async transport
(measured against benchmarks/stub_vllm.py), which was most of the gateway's own hop. Errors are
raised as httpx's, so serving/backends.py handles one family: a refused or timed-out connection is
httpx.ConnectError / ConnectTimeout (the request was never delivered: another replica may take it),
anything later httpx.ReadError / ReadTimeout (delivered: never sent again).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx

_AIO_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ValueError)


def _read_error(e: BaseException) -> httpx.HTTPError:
    if isinstance(e, asyncio.TimeoutError):
        return httpx.ReadTimeout(f"no answer from the backend in time ({e!r})")
    return httpx.ReadError(repr(e))


class AioResponse:
    """What the proxy reads of a response, under httpx.Response's names, over an aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._r = response
        self.status_code = response.status
        self.headers = response.headers  # case-insensitive

    async def aread(self) -> bytes:
        try:
            return await self._r.read()
        except _AIO_ERRORS as e:
            raise _read_error(e) from e

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive."""
        try:
            async for chunk in self._r.content.iter_any():
                yield chunk
        except _AIO_ERRORS as e:
            raise _read_error(e) from e

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines without their line ends, empty ones included (the SSE framing), as httpx gives them,
        however long: the lines are cut from the chunks here, since aiohttp's own line reader
        refuses a line above twice its read buffer (an SSE event with many logprobs can be longer)."""
        pending: list[bytes] = []  # the start of a line still arriving (chunks, joined once)
        try:
            async for chunk in self._r.content.iter_any():
                if b"\n" not in chunk:
                    pending.append(chunk)
                    continue
                first, *rest, last = chunk.split(b"\n")
                pending.append(first)
                for line in (b"".join(pending), *rest):
                    yield line.removesuffix(b"\r").decode("utf-8", "replace")
                pending = [last]
        except _AIO_ERRORS as e:
            raise _read_error(e) from e
        if any(pending):
            yield b"".join(pending).removesuffix(b"\r").decode("utf-8", "replace")

    async def aclose(self) -> None:
        if self._r.content.at_eof():
            self._r.release()  # read to the end: the connection goes back to the pool
        else:
            self._r.close()  # cut short (the client left): closing it makes vLLM abort the request


class HotTransport:
    """POSTs to one replica. The session is made on first use, inside the event loop."""

    def __init__(self, base_url: str, headers: dict[str, str], read_timeout_s: float, uds: str | None = None):
        self._base, self._headers, self._uds = base_url, headers, uds  # uds: a Unix socket's path
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=read_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(
        self, method: str, path: str, content: bytes | None, headers: dict[str, str] | None = None
    ) -> AioResponse:
        """`headers`: this request's own, on top of the session's."""
        if self._session is None:
            pool = {"limit": 1024, "keepalive_timeout": 4.0}  # expires before vLLM's 5 s
            connector = aiohttp.UnixConnector(self._uds, **pool) if self._uds else aiohttp.TCPConnector(**pool)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),  # vLLM answers uncompressed
                read_bufsize=2**18,  # chunks; lines of any length are assembled in aiter_lines
            )
        try:
            r = await self._session.request(method, self._base + path, data=content, headers=headers)
        except aiohttp.ClientConnectorError as e:  # refused / unreachable: never delivered
            raise httpx.ConnectError(repr(e)) from e
        except aiohttp.ConnectionTimeoutError as e:
            raise httpx.ConnectTimeout(repr(e)) from e
        except _AIO_ERRORS as e:
            raise _read_error(e) from e
        return AioResponse(r)

    @property
    def open(self) -> bool:
        return self._session is not None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
