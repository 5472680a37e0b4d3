"""`fedrouter models prepare`: the base model folder from its GGUF, the embedder checked offline, and
the embedder's derived forms (ONNX export, static table) made once."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="prepare the default models").add_subparsers(dest="action", required=True)
    prep = models.add_parser("prepare", help="turn the GGUF into an HF folder (once) and check the embedder")
    prep.add_argument("--out", help="folder for the base model (default: ~/.cache/fedrouter/models/...)")
    prep.add_argument("--force", action="store_true", help="prepare again even if the folder exists")
    prep.set_defaults(fn=cmd_models_prepare)


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
            f"static embedder (the default routing space): [green]ready[/] at {static_cache_dir(DEFAULT_EMBEDDER)}"
        )
    else:
        started = time.monotonic()
        with console.status("distilling a static embedder from the embedder (once, ~20 s)"):
            out = distill_static(DEFAULT_EMBEDDER, force=args.force)
        console.print(
            f"static embedder (the default routing space): [green]distilled[/] to {out} in {time.monotonic() - started:.0f} s"
        )
