"""FedRouter against its baselines on the paper's scenarios, with SmolLM2-135M on this machine.

Every strategy trains once on the `dual` partition (each client holds two tasks: the paper's
intra-client interference); the release is then evaluated on
- `dual`: each client's own tasks, and
- `generalization`: each client's tasks it never trained on (same training, other test sets),
with routing exactly as the gateway routes (`routed`), the best adapter per task (`oracle`), each
client's own adapter where the strategy has one (`client`), and the base model.

    python -m benchmarks.training_compare [--strategies fedrouter,fedavg,...] [--rounds 3] [--local-steps 25]

Writes benchmarks/results/training_compare.json, training_compare.md and training_compare.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.stack import RESULTS, machine

PAPER = {
    "interference": "+6.1% relative (best case, vs client-centric personalised FL)",
    "generalization": "+136% relative (best case)",
}


def run(args: argparse.Namespace) -> dict:
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.data.scenarios import scenario_from_config
    from fedrouter.training.evaluate import evaluate_release
    from fedrouter.training.run import train

    results: dict = {"benchmark": args.name, "machine": machine(), "settings": {}, "runs": {}}
    for strategy in args.strategies.split(","):
        cfg = TrainConfig(
            strategy=strategy,
            out=str(Path(args.work) / args.name / strategy),
            scenario="dual",
            tasks=args.tasks,
            num_clients=args.clients,
            rounds=args.rounds,
            local_steps=args.local_steps,
            seed=args.seed,
            lora_r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            test_per_task=args.test_per_task,
            k_global=args.k_global,
        )
        results["settings"] = {k: v for k, v in cfg.to_record().items() if k not in ("strategy", "out", "base_model")}
        started = time.monotonic()
        release = train(cfg)
        train_s = time.monotonic() - started
        run_result = {
            "train_s": round(train_s, 1),
            "release": str(release.path),
            "adapters": list(release.manifest.adapters),
        }
        for scenario in ("dual", "generalization"):
            t = time.monotonic()
            ev = evaluate_release(
                release.path, scenario_from_config(TrainConfig(**{**cfg.to_record(), "scenario": scenario}))
            )
            run_result[scenario] = {
                k: ev[k] for k in ("modes", "per_task", "per_client", "routing_agrees_with_oracle", "matrix", "n")
            }
            run_result[scenario]["eval_s"] = round(time.monotonic() - t, 1)
        results["runs"][strategy] = run_result
        print(
            f"{strategy}: trained in {train_s:.0f} s; dual {run_result['dual']['modes']}; "
            f"generalization {run_result['generalization']['modes']}",
            flush=True,
        )
        (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")  # keep partial results
    return results


def table(results: dict) -> str:
    rows = [
        "| strategy | train s | dual: routed | dual: client's own | dual: oracle | gen.: routed | gen.: client's own "
        "| gen.: oracle | routing = best adapter | base (dual / gen.) |",
        "|---" * 10 + "|",
    ]
    for name, r in results["runs"].items():
        d, g = r["dual"]["modes"], r["generalization"]["modes"]
        own = lambda m: f"{m['client']:.3f}" if "client" in m else "–"  # noqa: E731
        rows.append(
            f"| {name} | {r['train_s']:.0f} | {d['routed']:.3f} | {own(d)} | {d['oracle']:.3f} | {g['routed']:.3f} "
            f"| {own(g)} | {g['oracle']:.3f} | {r['dual']['routing_agrees_with_oracle']:.0%} "
            f"| {d['base']:.3f} / {g['base']:.3f} |"
        )
    return "\n".join(rows)


def relative_gains(results: dict) -> dict:
    """FedRouter (routed, as served) against each baseline as its users would use it: a client-centric
    strategy through each client's own adapter, a task-centric one through the router."""
    runs = results["runs"]
    if "fedrouter" not in runs:
        return {}
    out: dict = {}
    for scenario in ("dual", "generalization"):
        ours = runs["fedrouter"][scenario]["modes"]["routed"]
        out[scenario] = {"fedrouter": ours, "vs": {}}
        for name, r in runs.items():
            if name == "fedrouter":
                continue
            modes = r[scenario]["modes"]
            theirs = modes.get("client", modes["routed"])
            out[scenario]["vs"][name] = {
                "score": theirs,
                "how": "client's own" if "client" in modes else "routed",
                "relative": (ours - theirs) / theirs if theirs > 0 else None,
            }
    return out


def gains_markdown(gains: dict) -> str:
    lines = [
        "FedRouter (routed) against each baseline as it is used (client-centric strategies through each "
        "client's own adapter):",
        "",
        "| scenario | FedRouter | " + " | ".join(next(iter(gains.values()))["vs"]) + " |",
        "|---" * (2 + len(next(iter(gains.values()))["vs"])) + "|",
    ]
    for scenario, g in gains.items():
        cells = [
            f"{v['score']:.3f} ({v['relative']:+.1%})" if v["relative"] is not None else f"{v['score']:.3f}"
            for v in g["vs"].values()
        ]
        lines.append(f"| {scenario} | {g['fedrouter']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(in brackets: FedRouter's relative gain over that baseline)\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["runs"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, scenario in zip(axes, ("dual", "generalization")):
        modes = ["routed", "client", "oracle", "base"]
        width = 0.2
        for j, m in enumerate(modes):
            vals = [results["runs"][n][scenario]["modes"].get(m, np.nan) for n in names]
            ax.bar(np.arange(len(names)) + j * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(names)) + 0.3, names, rotation=15)
        ax.set_title(f"{scenario}: mean score (exact match)")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    s = results["settings"]
    fig.suptitle(
        f"SmolLM2-135M, {s.get('num_clients')} clients, tasks {s.get('tasks')}, "
        f"{s.get('rounds')} rounds x {s.get('local_steps')} steps",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategies", default="fedrouter,fedavg,local,clustered,floral,oracle")
    ap.add_argument("--tasks", default="add,sentiment,capital,parity")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--k-global", type=int, default=4)
    ap.add_argument("--test-per-task", type=int, default=24)
    ap.add_argument("--name", default="training_compare", help="results file name (e.g. a second regime)")
    ap.add_argument("--work", default="runs/bench/training")
    ap.add_argument("--from-json", action="store_true", help="only re-render results/<name>.json")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.from_json:  # re-render the table and plot from a finished run
        results = json.loads((RESULTS / f"{args.name}.json").read_text())
    else:
        results = run(args)
    results["paper"] = PAPER
    results["relative_gains"] = relative_gains(results)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = table(results) + "\n\n" + gains_markdown(results["relative_gains"])
    (RESULTS / f"{args.name}.md").write_text(md)
    plot(results, RESULTS / f"{args.name}.png")
    print(md)


if __name__ == "__main__":
    main()
