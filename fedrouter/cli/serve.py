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
    serve.add_argument("--vllm-port", type=int, help="port of the supervised vLLM (default 8100)")
    serve.add_argument("--vllm-arg", action="append", metavar="ARG", help="extra argument for the supervised vLLM")
    serve.add_argument("--vllm-log", help="file for vLLM's output")
    serve.add_argument(
        "--admin-token", help="bearer token for /admin routes; visible in `ps`: prefer FEDROUTER_ADMIN_TOKEN"
    )
    serve.add_argument("--admin-token-file", help="file holding the bearer token for /admin routes")
    serve.add_argument("--watch", action="store_true", help="reload when the release path (a `latest` link) changes")
    cluster.add_serve_flags(serve)
    serve.set_defaults(fn=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    if args.ray:
        return cluster.cmd_serve_ray(args)
    import logging

    import uvicorn

    from fedrouter.serving.app import create_app
    from fedrouter.serving.settings import GatewaySettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "faiss.loader", "sentence_transformers"):  # per-request and load chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
            "replica_policy": args.replica_policy,
        }.items()
        if v is not None
    }
    if args.admin_token:
        logging.getLogger("fedrouter.serving").warning(
            "--admin-token is visible to every user of this machine (ps); "
            "use FEDROUTER_ADMIN_TOKEN or --admin-token-file instead"
        )
    settings = GatewaySettings(**overrides)
    app = create_app(settings)
    # uvloop and httptools when installed (core dependencies): the faster event loop and parser
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False, timeout_graceful_shutdown=30
    )
