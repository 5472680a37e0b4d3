"""The Serve application: an ingress deployment in front of an engine deployment.

    clients --HTTP--> Ingress replicas (gateway: route auto -> adapter -> content name)
                      (each listens on host:port itself; front "proxy": Serve's proxy in between)
                                         | HTTP to the replica's door (data_plane "direct"), or a
                                         | DeploymentHandle call, multiplexed_model_id = content name
                                         v
                                      Engine replicas (one per GPU / CPU node, each with its vLLM)

Ray places, health-checks, restarts and configures the replicas either way; with "direct" (the
default) a generation's bytes go over plain HTTP between the two (serving/ray/door.py says why).

`build(args)` is Serve's application builder (import path `fedrouter.serving.ray.app:build`),
so the application is deployed from a config and a publish changes only the ingress's
`user_config` (a config whose code version — import path and args — is unchanged is applied in
place: no replica restarts). `RaySpec` is the whole of that config's `args`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from fedrouter.router.release import Release
from fedrouter.serving.ray.engine import AttachedEngine, EngineCore, VLLMEngine
from fedrouter.serving.ray.ingress import TRANSPORTS, Ingress
from fedrouter.serving.ray.release_shelf import local_release
from fedrouter.serving.ray.ring_router import AdapterRingRouter
from fedrouter.serving.ray.stub_engine import StubEngine
from fedrouter.serving.registry import engine_names

APP = "fedrouter"  # the application's name in Serve
# A stopping replica's grace (Serve's graceful_shutdown_timeout_s): its answers under way end first,
# the door's and the front's too (they wait DRAIN_S, a little less)
GRACE_S = 60.0
ENGINES: dict[str, type[EngineCore]] = {"vllm": VLLMEngine, "stub": StubEngine, "attached": AttachedEngine}


class RaySpec(BaseModel):
    """What `fedrouter serve --ray` deploys (the application's `args`)."""

    release: str  # the release the replicas start with (published ones replace it)
    # its digest once shipped to the cluster (serving/ray/release_shelf.py; `deploy` ships it): a
    # node where `release` is not that release reads the shelf's copy; "": read `release` as it is
    release_digest: str = ""
    release_cache: str | None = None  # where a node keeps shipped releases (default <cache>/releases)
    engine: str = "vllm"  # a key of ENGINES: "vllm", or "stub" (tests)
    engine_replicas: int = 1  # one per GPU, or per CPU node
    engine_num_cpus: float = 1.0
    engine_num_gpus: float = 0.0  # 1 per GPU; 0.5 for two replicas sharing one
    # Which engine replica takes an adapter's requests: "ring" (its home on a hash ring of the
    # replicas, serving/ray/ring_router.py) or "serve" (Serve's own multiplexed routing: a replica
    # that reported holding it, else the one with the fewest models).
    router: str = "ring"
    # Adapters one engine replica holds before Serve evicts the least recently used; 0: sized from
    # the starting release's K adapters. "serve" needs ceil(K / n) exactly (room for more on every
    # replica splits an adapter's requests); "ring" places by hash, so homes are uneven for small
    # K: 2 x ceil(K / n), at most K (an adapter's slot is small next to the KV cache).
    models_per_replica: int = 0
    engine_options: dict[str, Any] = Field(default_factory=dict)  # the engine class's keyword arguments
    # How generation requests go from an ingress replica to an engine replica: "direct" (HTTP to
    # the replica's door, placed on the same ring; the handle when no door is known) or "handle"
    # (every request a DeploymentHandle call). benchmarks/ray_overhead.py measures both.
    data_plane: str = "direct"
    # Who takes the clients' HTTP: "ingress" (every ingress replica listens on host:port itself,
    # the replicas of a node sharing the port, as `fedrouter serve` does; Serve starts no proxy) or
    # "proxy" (Serve's proxy on every node, which hands each request to an ingress replica through
    # Ray: one actor call, and one more back to the proxy for a request's body).
    front: str = "ingress"
    host: str = "127.0.0.1"  # where clients connect (cluster.deploy sets both from its arguments)
    port: int = 8000
    ingress_replicas: int = 1
    ingress_num_cpus: float = 0.5
    gateway: dict[str, Any] = Field(default_factory=dict)  # GatewaySettings fields (release excluded)
    # Ray Serve's own switches (RAY_SERVE_* variables), set in every replica of both deployments
    # (a runtime_env: each replica's worker process starts with them, on any node). E.g.
    # RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 runs the gateway on the replica's own event
    # loop, RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 routes handle calls on it too (fewer thread
    # hand-offs per request); benchmarks/ray_overhead.py --serve-env measures them.
    serve_env: dict[str, str] = Field(default_factory=dict)
    health_check_period_s: float = 10.0
    max_ongoing_requests: int = 256  # per replica; the gateway's own limits apply before this

    def start(self) -> Release:
        """The starting release, read from its folder on this node."""
        return local_release(self.release, self.release_digest, self.release_cache)

    def slots(self, start: Release | None = None) -> int:
        """Adapters per engine replica; `start`: the starting release, if already read."""
        if self.models_per_replica > 0:
            return self.models_per_replica
        k = len((start or self.start()).manifest.adapters)
        share = max(1, math.ceil(k / max(1, self.engine_replicas)))
        return share if self.router == "serve" else max(1, min(k, 2 * share))


def build(args: dict[str, Any]) -> Application:
    spec = RaySpec(**args)
    if spec.engine not in ENGINES:
        raise ValueError(f"unknown engine {spec.engine!r} ({', '.join(ENGINES)})")
    if spec.router not in ("ring", "serve"):
        raise ValueError(f"unknown router {spec.router!r} (ring, serve)")
    if spec.data_plane not in TRANSPORTS:
        raise ValueError(f"unknown data plane {spec.data_plane!r} ({', '.join(TRANSPORTS)})")
    if spec.front not in ("ingress", "proxy"):
        raise ValueError(f"unknown front {spec.front!r} (ingress, proxy)")
    doors = TRANSPORTS[spec.data_plane].doors
    if doors and spec.router != "ring":
        raise ValueError("the direct data plane places requests on the ring: router 'serve' needs data_plane 'handle'")
    actor_env = {"runtime_env": {"env_vars": dict(spec.serve_env)}} if spec.serve_env else {}
    routing, start = {}, spec.start()
    if spec.router == "ring":
        # every ingress's router starts from the release's adapters, so all compute the same balanced
        # homes from the first request (a later release's adapters are added as they are seen)
        keys = sorted(engine_names(start).values())
        routing["request_router_config"] = RequestRouterConfig(
            request_router_class=AdapterRingRouter, request_router_kwargs={"keys": keys}
        )
    engine = serve.deployment(
        ENGINES[spec.engine],
        name="Engine",
        num_replicas=spec.engine_replicas,
        ray_actor_options={"num_cpus": spec.engine_num_cpus, "num_gpus": spec.engine_num_gpus, **actor_env},
        health_check_period_s=spec.health_check_period_s,
        max_ongoing_requests=spec.max_ongoing_requests,
        graceful_shutdown_timeout_s=GRACE_S,
        **routing,
    ).bind(
        release=spec.release,
        release_digest=spec.release_digest,
        release_cache=spec.release_cache,
        models_per_replica=spec.slots(start),
        door=doors,
        **spec.engine_options,
    )
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        num_replicas=spec.ingress_replicas,
        ray_actor_options={"num_cpus": spec.ingress_num_cpus, **actor_env},
        max_ongoing_requests=spec.max_ongoing_requests,
        graceful_shutdown_timeout_s=GRACE_S,
        user_config={"release": spec.release, "digest": spec.release_digest},
    )
    gateway = {**spec.gateway, "release": spec.release}
    front = {"host": spec.host, "port": spec.port} if spec.front == "ingress" else None
    return ingress.bind(gateway, engine, spec.release_digest, spec.release_cache, spec.data_plane, front)
