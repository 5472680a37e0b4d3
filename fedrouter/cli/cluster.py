"""`fedrouter serve --ray` and `fedrouter release publish`: serving past one machine on Ray Serve
(serving/ray/). Needs the `fedrouter[ray]` extra; the single-machine `fedrouter serve` does not."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    ray = serve.add_argument_group("past one machine (Ray Serve; `pip install fedrouter[ray]`)")
    ray.add_argument("--ray", action="store_true", help="deploy as a Ray Serve application: ingress + engines")
    ray.add_argument(
        "--ray-address",
        help="a running Ray cluster ('auto' on one of its nodes): deploy there and return; "
        "default: start a local cluster and serve until Ctrl-C",
    )
    ray.add_argument("--engine-replicas", type=int, default=1, help="engine replicas, each with its vLLM (one per GPU)")
    ray.add_argument("--engine-gpus", type=float, default=0.0, help="GPUs per engine replica (0.5: two share one)")
    ray.add_argument("--engine-cpus", type=float, default=1.0, help="CPUs per engine replica")
    ray.add_argument("--ingress-replicas", type=int, default=1, help="gateway (ingress) replicas")
    add_path_flags(ray)
    ray.add_argument(
        "--models-per-replica", type=int, default=0, help="adapters an engine replica holds (default ceil(K/replicas))"
    )


def add_path_flags(parser: Any) -> None:
    """--front and --data-plane (RaySpec.front, RaySpec.data_plane): how a request travels on Ray.
    Also used by benchmarks/ray_overhead.py and benchmarks/ray_throughput.py."""
    parser.add_argument(
        "--front",
        choices=["ingress", "proxy"],
        default="ingress",
        help="who takes clients' HTTP on --host/--port: the ingress replicas themselves, or Serve's proxy on every node",
    )
    parser.add_argument(
        "--data-plane",
        choices=["direct", "handle"],
        default="direct",
        help="ingress -> engine: HTTP to the engine replica's door (direct) or a Ray handle call per request",
    )


def add_publish(release: argparse._SubParsersAction) -> None:
    publish = release.add_parser("publish", help="publish a release to a `fedrouter serve --ray` application")
    publish.add_argument("release", help="the release folder on this machine (shipped to every node through Ray)")
    publish.add_argument("--ray-address", default="auto", help="the Ray cluster (default: the one on this node)")
    publish.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every ingress replica")
    publish.set_defaults(fn=cmd_publish)


def cmd_serve_ray(args: argparse.Namespace) -> None:
    import logging
    import time
    from pathlib import Path

    import ray
    from ray import serve

    from fedrouter.serving.ray.app import RaySpec
    from fedrouter.serving.ray.cluster import deploy
    from fedrouter.serving.settings import GatewaySettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.backend or args.watch or args.sole_gateway or args.admin_token or args.admin_token_file:
        raise ValueError(
            "--ray serves through its engines and publishes releases: no --backend, --watch, --sole-gateway "
            "or admin token"
        )
    settings = GatewaySettings(**({"release": args.release} if args.release else {}))
    if settings.release is None:
        raise ValueError("a release to serve is needed (--release or FEDROUTER_RELEASE)")
    spec = RaySpec(
        release=str(Path(settings.release).resolve()),
        engine_replicas=args.engine_replicas,
        engine_num_gpus=args.engine_gpus,
        engine_num_cpus=args.engine_cpus,
        ingress_replicas=args.ingress_replicas,
        models_per_replica=args.models_per_replica,
        data_plane=args.data_plane,
        front=args.front,
        engine_options={"vllm_args": args.vllm_arg or []},
    )
    ray.init(address=args.ray_address)
    deploy(spec, host=args.host or settings.host, port=args.port or settings.port)
    print(
        f"fedrouter is serving release {spec.release} on http://{args.host or settings.host}:{args.port or settings.port}"
    )
    if args.ray_address is None:  # our own local cluster lives as long as this process
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()


def cmd_publish(args: argparse.Namespace) -> None:
    import ray

    from fedrouter.serving.ray.cluster import publish

    ray.init(address=args.ray_address, logging_level="WARNING")
    result = publish(args.release, timeout_s=args.timeout)
    print(json.dumps(result, indent=2))
    if result["refused"]:
        print("error: some ingress replicas refused the release and still serve the previous one", file=sys.stderr)
        sys.exit(1)
