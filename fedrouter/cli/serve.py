"""`fedrouter serve`: the routed OpenAI-compatible gateway in front of vLLM (settings: serving/settings.py)."""

from __future__ import annotations

import argparse

from fedrouter.cli import cluster


def add(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the routed OpenAI-compatible gateway in front of vLLM")
    serve.add_argument("--release", help="release folder or `latest` link (or FEDROUTER_RELEASE)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--backend",
        action="append",
        metavar="URL",
        help="a running vLLM OpenAI server (repeat for replicas); default: start and supervise one",
    )
    serve.add_argument(
        "--replica-policy",
        choices=["affinity", "least-loaded"],
        help="with several --backend: adapter affinity (default) or least loaded for every request",
    )
    serve.add_argument(
        "--vllm-port",
        type=int,
        help="the supervised vLLM listens on 127.0.0.1:PORT, open to every local user (benchmarks); "
        "default: a private Unix socket that only the gateway reaches",
    )
    serve.add_argument("--vllm-arg", action="append", metavar="ARG", help="extra argument for the supervised vLLM")
    serve.add_argument("--vllm-log", help="file for vLLM's output")
    serve.add_argument(
        "--admin-token", help="bearer token for /admin routes; visible in `ps`: prefer FEDROUTER_ADMIN_TOKEN"
    )
    serve.add_argument("--admin-token-file", help="file holding the bearer token for /admin routes")
    serve.add_argument("--watch", action="store_true", help="reload when the release path (a `latest` link) changes")
    serve.add_argument(
        "--sole-gateway",
        action="store_true",
        help="with --backend: no other gateway uses these replicas, so retired releases' adapters are "
        "unloaded from them (default: never unloaded from attached replicas; vLLM's LRU evicts them)",
    )
    serve.add_argument(
        "--route-only",
        action="store_true",
        help="with --backend: the backend is a platform that owns the adapters (a Kubernetes inference gateway); "
        "only route, forwarding each request with the adapter's name in the release as `model`",
    )
    serve.add_argument(
        "--api-keys-file",
        help='JSON {"KEY": {"client": ID, "adapters": [...]}}: /v1 needs `Authorization: Bearer KEY` '
        "(or FEDROUTER_API_KEYS)",
    )
    serve.add_argument("--max-connections", type=int, help="connections served at once; past it: 503 (default 2048)")
    serve.add_argument(
        "--expose-routing-headers",
        action="store_true",
        help="send x-fedrouter-score and x-fedrouter-routing (they let clients map the centroids)",
    )
    serve.add_argument(
        "--trust-client-header",
        action="store_true",
        help="a proxy in front authenticates clients and names them in x-fedrouter-client",
    )
    cluster.add_serve_flags(serve)
    serve.set_defaults(fn=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    if args.ray:
        return cluster.cmd_serve_ray(args)
    import logging

    import uvicorn

    from fedrouter.serving.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "faiss.loader", "sentence_transformers"):  # per-request and load chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = settings_from(args)
    app = create_app(settings)
    uvicorn.run(app, **server_options(settings))


def settings_from(args: argparse.Namespace):
    """GatewaySettings from the flags given (the others from FEDROUTER_* and the defaults)."""
    import logging

    from fedrouter.serving.settings import GatewaySettings

    overrides = {
        k: v
        for k, v in {
            "release": args.release,
            "host": args.host,
            "port": args.port,
            "backends": args.backend or None,
            "vllm_port": args.vllm_port,
            "vllm_args": args.vllm_arg or None,
            "admin_token": args.admin_token,
            "admin_token_file": args.admin_token_file,
            "vllm_log": args.vllm_log,
            "watch": args.watch or None,
            "sole_gateway": args.sole_gateway or None,
            "route_only": args.route_only or None,
            "replica_policy": args.replica_policy,
            "api_keys_file": args.api_keys_file,
            "max_connections": args.max_connections,
            "expose_routing_headers": args.expose_routing_headers or None,
            "trust_client_header": args.trust_client_header or None,
        }.items()
        if v is not None
    }
    if args.admin_token:
        logging.getLogger("fedrouter.serving").warning(
            "--admin-token is visible to every user of this machine (ps); "
            "use FEDROUTER_ADMIN_TOKEN or --admin-token-file instead"
        )
    return GatewaySettings(**overrides)


def server_options(settings) -> dict:
    """uvicorn's options for a gateway (uvloop and httptools when installed: core dependencies).
    `limit_concurrency` bounds the connections (and requests) served at once: past it uvicorn
    answers 503 before the gateway reads anything."""
    return {
        "host": settings.host,
        "port": settings.port,
        "limit_concurrency": settings.max_connections,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 30,
    }
