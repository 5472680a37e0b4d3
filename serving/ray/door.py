"""The engine replicas' door: the requests' way in that skips Ray's handle call.

Measured on the 2-core machine (benchmarks/ray_overhead.py, 2026-11-27): of the +12–16 ms the Ray
path added to a short request, 9–11 ms was the DeploymentHandle call from the ingress replica to the
engine replica (Serve's router, the actor call, one object per streamed item). Ray stays what places,
health-checks, restarts and configures the replicas; the bytes of a generation need none of that.

So each engine replica also listens on its node's address, on a port the OS picks, for exactly the
two generation routes, and asks for the application's secret as a bearer token (a 401 without it
says nothing more). Behind the door the request runs the same `EngineCore.generate` a handle call
runs: the adapter is loaded through `@serve.multiplexed` (Serve's LRU and its model reports),
counted in flight so eviction waits for it, and a client that goes away cancels the generation,
which closes the connection to vLLM. vLLM itself stays on its replica's private Unix socket.

Where the doors are: the cluster's key-value store (GCS) holds `door/<replica id>` -> URL in
namespace `fedrouter`, written by the replica once its door listens, deleted when it shuts down.
Replica ids are never reused, so a stale entry (a killed replica) only ever refuses connections,
and an ingress drops it when it does. The secret is made once per cluster by whichever replica
comes first, and anyone who can read it can already run code on the cluster.

What a door answers besides the generation itself (headers, so that no vLLM answer is mistaken for one):
- 409 with `x-fedrouter-door: unknown-adapter`: the adapter's folder is not on this node and no copy of its
  bytes came through Ray yet; the ingress sends that request through the handle instead (it carries
  the bytes), nothing having been generated;
- 502 with `x-fedrouter-door: failed`: the engine failed before the answer's head (loading the adapter, or
  vLLM unreachable); the ingress treats it as a delivery failure, as a failed handle call.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fedrouter.serving.ray.handle_transport import GENERATION

if TYPE_CHECKING:
    from fedrouter.serving.ray.engine import EngineCore

log = logging.getLogger("fedrouter.serving")
NAMESPACE = "fedrouter"
PREFIX = b"door/"
_SECRET = b"door-secret"
ADAPTER = "x-fedrouter-adapter"  # the content name ("" for the base model)
FOLDER = "x-fedrouter-folder"  # the adapter's store folder, as the ingress registered it
DOOR = "x-fedrouter-door"  # set on the door's own answers (unknown-adapter, failed)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def cluster_secret() -> str:
    """The application's door secret, made by the first caller on this cluster (blocking: GCS)."""
    from ray.experimental import internal_kv as kv

    kv._internal_kv_put(_SECRET, secrets.token_urlsafe(32), overwrite=False, namespace=NAMESPACE)
    value = kv._internal_kv_get(_SECRET, namespace=NAMESPACE)
    if not value:
        raise RuntimeError("the cluster's key-value store did not keep the door secret")
    return value.decode()


def listed() -> dict[str, str]:
    """Every door the cluster's key-value store lists: replica id -> URL (blocking: GCS)."""
    from ray.experimental import internal_kv as kv

    doors = {}
    for key in kv._internal_kv_list(PREFIX, namespace=NAMESPACE) or []:
        url = kv._internal_kv_get(key, namespace=NAMESPACE)
        if url:
            doors[key[len(PREFIX) :].decode()] = url.decode()
    return doors


def forget(replica: str) -> None:
    """Delete a door's entry (its replica shut down, or its port refuses connections)."""
    from ray.experimental import internal_kv as kv

    kv._internal_kv_del(PREFIX + replica.encode(), namespace=NAMESPACE)


def node_address() -> str:
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"


class Door:
    """One engine replica's door: an ASGI app on uvicorn, on this replica's event loop."""

    def __init__(self, core: EngineCore, secret: str):
        self.core = core
        self._auth = f"Bearer {secret}".encode()
        self.url = ""
        self.replica = ""
        self._server: Any = None
        self.answered = 0  # requests that came in through the door (tests, benchmarks)

    async def open(self, host: str, replica: str = "", register: bool = True) -> str:
        """Listen on `host` (a port the OS picks); with `register`, list it under `replica`."""
        self._server, port = await listen(self, host, 0, http="httptools", timeout_keep_alive=30)
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.replica = replica
        if register:
            from ray.experimental import internal_kv as kv

            await asyncio.to_thread(kv._internal_kv_put, PREFIX + replica.encode(), self.url, namespace=NAMESPACE)
        return self.url

    def close(self) -> None:
        """Unlist, and stop taking connections: uvicorn lets the answers under way end
        (`stopped` waits for that)."""
        if self.replica:
            try:
                forget(self.replica)
            except Exception:  # the cluster is going down too
                pass
            self.replica = ""
        if self._server is not None:
            self._server.should_exit = True

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        if not hmac.compare_digest(headers.get(b"authorization", b""), self._auth):
            return await _plain(send, 401, b"")
        path = scope["path"]
        if scope["method"] != "POST" or path not in GENERATION:
            return await _plain(send, 404, b"")
        body = await _body(receive)
        adapter = headers.get(ADAPTER.encode(), b"").decode() or None
        folder = headers.get(FOLDER.encode(), b"").decode() or None
        core = self.core
        if adapter:
            folder = core._paths.get(adapter) or folder
            if not folder or (not core.has_folder(folder) and not core._payloads.get(adapter)):
                return await _plain(send, 409, b"unknown adapter", door="unknown-adapter")
        self.answered += 1
        answer = core.generate(path, body, adapter, folder, core._payloads.get(adapter) if adapter else None)
        pump = asyncio.ensure_future(self._pump(answer, send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():  # the ingress went away (its client did): cancel the generation
                pump.cancel()
            gone.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
            await answer.aclose()
        if not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # uvicorn cuts the connection: the ingress sees a broken answer

    async def _pump(self, answer: Any, send: Send) -> None:
        try:
            head = await answer.__anext__()
        except Exception as e:  # nothing generated: say so in the door's own words
            log.error("door: the engine failed before answering: %r", e)
            return await _plain(send, 502, repr(e)[:500].encode(), door="failed")
        start = [(b"content-type", head["content-type"].encode())]
        await send({"type": "http.response.start", "status": head["status"], "headers": start})
        async for chunk in answer:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def listen(app: Any, host: str, port: int, reuse_port: bool = False, **options: Any) -> tuple[Any, int]:
    """Serve the ASGI `app` with uvicorn on the running event loop at host:port (0: the OS picks;
    `reuse_port`: several processes of one node share the port, the kernel spreads connections);
    returns (the uvicorn server, the port) once it listens. Set `server.should_exit` to stop it."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    options = {"lifespan": "off", "access_log": False, "log_level": "warning", **options}
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    # _serve, not serve: serve would take the process's SIGINT/SIGTERM from Ray when this loop
    # runs on the main thread
    task = asyncio.get_running_loop().create_task(server._serve(sockets=[sock]))
    server.fedrouter_task = task  # kept: the loop holds tasks weakly
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError(f"uvicorn stopped before it listened on {host}:{port}")
        await asyncio.sleep(0.01)
    return server, port


async def stopped(server: Any, timeout_s: float) -> None:
    """Wait (at most `timeout_s`) for a `listen` server told to exit to finish its answers under way."""
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(server.fedrouter_task), timeout_s)
    except Exception as e:  # timed out, or it had failed: the replica goes anyway
        log.warning("server did not stop cleanly: %r", e)


async def _plain(send: Send, status: int, body: bytes, door: str | None = None) -> None:
    headers = [(b"content-type", b"text/plain")]
    if door:
        headers.append((DOOR.encode(), door.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
