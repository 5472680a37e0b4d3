"""`fedrouter release build|inspect` and `fedrouter route`: releases made from existing PEFT
adapters, shown, and asked where prompts go."""

from __future__ import annotations

import argparse
import json

from fedrouter.cli import cluster
from fedrouter.router.embed import DEFAULT_KIND as EMBEDDER_DEFAULT_KIND
from fedrouter.router.embed import KINDS as EMBEDDER_KINDS


def add(sub: argparse._SubParsersAction) -> None:
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
    build.add_argument(
        "--embedder",
        default=None,
        help="embedder model name or folder (default: all-MiniLM-L6-v2; for static: the model its table is distilled from)",
    )
    build.add_argument(
        "--embedder-kind",
        default=EMBEDDER_DEFAULT_KIND,
        choices=EMBEDDER_KINDS,
        help=f"the routing space (default: {EMBEDDER_DEFAULT_KIND}, a table distilled from MiniLM; "
        "sentence-transformers: MiniLM itself, see README 'Which embedder')",
    )
    build.add_argument("--threshold", type=float, default=0.0, help="cosine below which the fallback applies")
    build.add_argument("--fallback", default="base", choices=["base", "nearest"])
    build.add_argument("--release-id", help="default: the --out folder's name")
    build.set_defaults(fn=cmd_release_build)
    inspect = release.add_parser("inspect", help="print a release's manifest")
    inspect.add_argument("release")
    inspect.add_argument("--json", action="store_true", help="the raw manifest")
    inspect.set_defaults(fn=cmd_release_inspect)
    cluster.add_publish(release)

    route = sub.add_parser("route", help="show where prompts are routed")
    route.add_argument("prompt", nargs="+")
    route.add_argument("--release", required=True)
    route.set_defaults(fn=cmd_route)


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
