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

PAPER = {"interference": "+6.1% relative (best case, vs client-centric personalised FL)",
         "generalization": "+136% relative (best case)"}


def run(args: argparse.Namespace) -> dict:
    from training.config import TrainConfig
    from training.data.scenarios import scenario_from_config
    from training.evaluate import evaluate_release
    from training.run import train

    results: dict = {"benchmark": "training_compare", "machine": machine(), "settings": {}, "runs": {}}
    for strategy in args.strategies.split(","):
        cfg = TrainConfig(strategy=strategy, out=str(Path(args.work) / strategy), scenario="dual", tasks=args.tasks,
                          num_clients=args.clients, rounds=args.rounds, local_steps=args.local_steps, seed=args.seed)
        results["settings"] = {k: v for k, v in cfg.to_record().items() if k not in ("strategy", "out", "base_model")}
        started = time.monotonic()
        release = train(cfg)
        train_s = time.monotonic() - started
        run_result = {"train_s": round(train_s, 1), "release": str(release.path), "adapters": list(release.manifest.adapters)}
        for scenario in ("dual", "generalization"):
            t = time.monotonic()
            ev = evaluate_release(release.path, scenario_from_config(TrainConfig(**{**cfg.to_record(), "scenario": scenario})))
            run_result[scenario] = {k: ev[k] for k in ("modes", "per_task", "per_client", "routing_agrees_with_oracle", "matrix", "n")}
            run_result[scenario]["eval_s"] = round(time.monotonic() - t, 1)
        results["runs"][strategy] = run_result
        print(f"{strategy}: trained in {train_s:.0f} s; dual {run_result['dual']['modes']}; "
              f"generalization {run_result['generalization']['modes']}", flush=True)
        (RESULTS / "training_compare.json").write_text(json.dumps(results, indent=2) + "\n")  # keep partial results
    return results


def table(results: dict) -> str:
    rows = ["| strategy | train s | dual: routed | dual: client's own | dual: oracle | gen.: routed | gen.: client's own "
            "| gen.: oracle | routing = best adapter | base (dual / gen.) |", "|---" * 10 + "|"]
    for name, r in results["runs"].items():
        d, g = r["dual"]["modes"], r["generalization"]["modes"]
        own = lambda m: f"{m['client']:.3f}" if "client" in m else "–"  # noqa: E731
        rows.append(f"| {name} | {r['train_s']:.0f} | {d['routed']:.3f} | {own(d)} | {d['oracle']:.3f} | {g['routed']:.3f} "
                    f"| {own(g)} | {g['oracle']:.3f} | {r['dual']['routing_agrees_with_oracle']:.0%} "
                    f"| {d['base']:.3f} / {g['base']:.3f} |")
    return "\n".join(rows)


def relative_gains(results: dict) -> dict:
    """FedRouter (routed) against the best client-centric baseline (its clients' own adapters)."""
    runs = results["runs"]
    if "fedrouter" not in runs:
        return {}
    out = {}
    for scenario in ("dual", "generalization"):
        ours = runs["fedrouter"][scenario]["modes"]["routed"]
        rivals = {n: r[scenario]["modes"]["client"] for n, r in runs.items() if "client" in r[scenario]["modes"]}
        if rivals:
            best_name = max(rivals, key=rivals.get)
            best = rivals[best_name]
            out[scenario] = {"fedrouter": ours, "best_client_centric": best_name, "its_score": best,
                             "relative": (ours - best) / best if best > 0 else None}
    return out


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
    fig.suptitle(f"SmolLM2-135M, {s.get('num_clients')} clients, tasks {s.get('tasks')}, "
                 f"{s.get('rounds')} rounds x {s.get('local_steps')} steps", fontsize=9)
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
    ap.add_argument("--work", default="runs/bench/training")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = run(args)
    results["paper"] = PAPER
    results["relative_gains"] = relative_gains(results)
    (RESULTS / "training_compare.json").write_text(json.dumps(results, indent=2) + "\n")
    md = table(results) + "\n\nFedRouter (routed) vs the best client-centric baseline (clients' own adapters):\n\n"
    for scenario, g in results["relative_gains"].items():
        rel = f"{g['relative']:+.1%}" if g["relative"] is not None else "n/a"
        md += f"- {scenario}: {g['fedrouter']:.3f} vs {g['best_client_centric']} {g['its_score']:.3f} -> {rel} relative\n"
    (RESULTS / "training_compare.md").write_text(md)
    plot(results, RESULTS / "training_compare.png")
    print(md)


if __name__ == "__main__":
    main()
