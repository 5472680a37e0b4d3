"""The ingress deployment: today's gateway (serving/app.py, unchanged) as a Ray Serve ingress.

Each replica is one `create_app` gateway — schema, errors, limits, router and embedder, release
registry, hot swap and drain, metrics — whose way to vLLM is a HandleTransport to the engine
deployment instead of HTTP. Replicas are independent of the engines and of each other.

Releases are published once for the whole application, as this deployment's `user_config`
(`{"release": PATH, "digest": DIGEST}`): Serve calls `reconfigure` on every replica without
restarting it, and each validates, swaps and drains with the gateway's own Reloader. A replica on
a node where PATH is not that release reads the copy shipped to the cluster
(serving/ray/release_shelf.py), so releases need no shared filesystem. A release a replica refuses leaves
that replica serving the one it had: `reconfigure` does not raise, because Serve treats a raising
`reconfigure` as a failed replica — it stops it and starts a fresh one with the same config, whose
`reconfigure` fails again (docs/README "Scaling out" says what was observed). The refusal is kept
in `state()`, which `fedrouter release publish` reads.

In Ray mode there is no /admin route (a reload through it would change one replica only) and no
folder watch: publishing is the one way to change the release.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextvars import ContextVar
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from fedrouter.router.release import load_release
from fedrouter.serving.app import create_app
from fedrouter.serving.errors import GatewayError
from fedrouter.serving.ray.direct_transport import DirectTransport
from fedrouter.serving.ray.door import listen, stopped
from fedrouter.serving.ray.engine import replica_id
from fedrouter.serving.ray.handle_transport import HandleTransport
from fedrouter.serving.ray.release_shelf import local_release
from fedrouter.serving.ray.ring_router import reseed
from fedrouter.serving.registry import engine_names
from fedrouter.serving.settings import GatewaySettings

log = logging.getLogger("fedrouter.serving")
ENGINE_URL = "http://engine.ray"  # the one "backend" the gateway sees: the engine deployment
DRAIN_S = 55.0  # at shutdown, how long the answers under way may take (Serve's grace: GRACE_S in app.py)
_building: ContextVar[FastAPI] = ContextVar("fedrouter_ingress_app")
# RaySpec.data_plane -> how the ingress reaches the engines (the class says if the engines open doors)
TRANSPORTS: dict[str, type[HandleTransport]] = {"direct": DirectTransport, "handle": HandleTransport}


def _gateway_app() -> FastAPI:
    """serve.ingress's builder, called right after `Ingress.__init__` in the same coroutine: the
    gateway that constructor built (a builder takes no arguments; the gateway needs the handle)."""
    return _building.get()


def gateway_app(gateway: dict[str, Any], engine: Any, data_plane: str = "handle") -> FastAPI:
    """The gateway of one ingress replica. `gateway`: GatewaySettings fields (the release to start
    with included, as a folder on this node); `engine`: a DeploymentHandle to the engine deployment;
    `data_plane`: "direct" (generation requests through the engines' doors, serving/ray/door.py,
    on a Ray cluster) or "handle" (every request a handle call)."""
    # sole_gateway: "unloading" through the handle transport only forgets this ingress's own map of
    # a retired release's adapters (and its object-store copies); engines evict on their own, so no
    # other ingress is ever affected, and nothing grows with every publish
    fixed = {"backends": [ENGINE_URL], "watch": False, "admin_token": None, "admin_token_file": None}
    settings = GatewaySettings(**{**gateway, **fixed, "sole_gateway": True})
    if settings.release is None:
        raise ValueError("the ingress needs a release to start with")
    start = load_release(settings.release)
    kind = TRANSPORTS[data_plane]
    if kind.doors and not ray.is_initialized():  # local testing mode: no cluster, no doors
        kind = HandleTransport
    keys = sorted(engine_names(start).values())
    transport = kind.for_gateway(engine, start.manifest.base_model.name, keys, settings)
    return create_app(settings, transport=transport)


@serve.ingress(_gateway_app)
class Ingress:
    def __init__(
        self,
        gateway: dict[str, Any],
        engine: Any,
        digest: str = "",
        cache: str | None = None,
        data_plane: str = "handle",
        front: dict[str, Any] | None = None,
    ):
        """`digest`: the starting release's, when it was shipped; `cache`: where this node keeps
        shipped releases (release_shelf.local_release); `data_plane`: gateway_app's; `front`:
        {"host", "port"} where this replica serves HTTP itself (RaySpec.front), or None (Serve's proxy)."""
        self.cache = cache
        start = local_release(gateway["release"], digest, cache)
        self.gateway = gateway_app({**gateway, "release": str(start.path)}, engine, data_plane)
        self.refused: dict[str, str] = {}  # release path -> why this replica refused it
        # release digest -> the path it was published as (this node may read a shipped copy)
        self.published: dict[str, str] = {start.digest: gateway["release"]}
        # publishes apply in the order they arrive: one that started earlier never lands after a
        # later one (Serve's local testing mode calls the first reconfigure without awaiting it)
        self._publishing = asyncio.Lock()
        self._front = front if ray.is_initialized() else None  # local testing mode: no listening
        self._front_server: Any = None
        self._max_connections = GatewaySettings(**gateway).max_connections
        _building.set(self.gateway)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        async with self._publishing:
            await self._publish(config)
            if self._front and self._front_server is None:
                # the first reconfigure: Serve has run the gateway's startup (pool, registry) by now
                await self._open_front(self._front["host"], int(self._front["port"]))

    async def _open_front(self, host: str, port: int) -> None:
        """Serve the gateway at host:port from this replica, as `fedrouter serve` does on one
        machine; the ingress replicas of a node share the port (SO_REUSEPORT). Raising here makes
        Serve replace the replica and, if every try fails, say why in the deployment's status."""
        try:
            self._front_server, _ = await listen(
                self.gateway,
                host,
                port,
                reuse_port=True,
                limit_concurrency=self._max_connections,
                timeout_graceful_shutdown=DRAIN_S,
            )
        except OSError as e:
            raise RuntimeError(f"the ingress cannot listen on {host}:{port}: {e}") from None
        log.info("ingress replica %s: serving HTTP on %s:%s", replica_id(), host, port)

    async def check_health(self) -> None:
        """Raising makes Serve replace this replica: its HTTP server stopped taking connections."""
        server = self._front_server
        if server is not None and server.fedrouter_task.done():
            raise RuntimeError(f"the ingress's HTTP server on {self._front} stopped")

    def __del__(self) -> Any:
        """Serve's replica shutdown, which awaits what this returns: stop taking connections and
        let the answers under way end, at most DRAIN_S (Serve drains only the calls it made)."""
        server = getattr(self, "_front_server", None)
        if server is None:
            return None
        self._front_server = None  # once: Python calls __del__ again when it collects the object
        return stopped(server, DRAIN_S)

    async def _publish(self, config: dict[str, Any]) -> None:
        path, digest = (config or {}).get("release"), (config or {}).get("digest")
        if not path:
            return
        current = self.gateway.state.registry.current
        try:
            release = await asyncio.to_thread(local_release, path, digest, self.cache)
            # the engine router balances the new release's adapters from its first request on, as
            # every other ingress replica's does (serving/ray/ring_router.py)
            reseed(sorted(engine_names(release).values()))
            result = await self.gateway.state.reloader.load(str(release.path))
            self.published[self.gateway.state.registry.current.digest] = path
            log.info("publish: %s", result)
            self.refused.pop(str(path), None)
        except Exception as e:  # refused: keep serving the release this replica has
            reseed(sorted(current.adapters.values()))
            reason = e.message if isinstance(e, GatewayError) else repr(e)
            log.error("publish: release %s refused, still serving the previous one: %s", path, reason)
            self.refused[str(path)] = reason

    async def state(self) -> dict[str, Any]:
        """The release this replica serves (`path`: as published; `folder`: where this node reads
        it), and the publishes it refused."""
        served = self.gateway.state.registry.current
        return {
            "release": served.id,
            "digest": served.digest,
            "path": self.published.get(served.digest, str(served.release.path)),
            "folder": str(served.release.path),
            "refused": dict(self.refused),
            "replica": replica_id(),
            "pid": os.getpid(),
            # requests sent to the engines per way ("door", "handle"), with the direct data plane
            "through": dict(getattr(self.gateway.state.pool.backends[0].transport, "through", {})),
        }
