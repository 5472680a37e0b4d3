"""Tables, confidence intervals and plots of the training benchmark, rendered from its records
(benchmarks/results/training_runs.jsonl, written by training_bench.py). No number is typed here.

- mean ± 95% CI (t-distribution over seeds) per regime, strategy and routing mode;
- paired per-seed differences FedRouter (global routing, MiniLM) − each baseline as it is used
  (its first evaluation mode: the client's own adapter for client-centric strategies);
- MiniLM against the base-LLM embedder: routing accuracy (global routing picks the adapter that
  scores best on the prompt's task), routing purity (share of a task's prompts sent to the task's
  most frequent adapter; independent of scores) and score;
- per-round curves and a bar chart with CI whiskers (PNG).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.training_bench import MODES, RECORDS, ROUTING, STRATEGIES

PRIMARY = {s: ROUTING[m[0]] for s, m in MODES.items()}  # the mode a strategy is compared in
PAPER = {"interference": 0.061, "generalization": 1.36}  # relative gains the paper reports (best case)


def load(path: Path = RECORDS) -> list[dict]:
    """Records, the latest one kept where a (profile, regime, strategy, seed, routing, embedder) repeats."""
    if not path.exists():
        return []
    latest = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            latest[(r["profile"], r["regime"], r["strategy"], r["seed"], r["routing"], r["embedder"])] = r
    return list(latest.values())


def ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width NaN with one value."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.3f}" if np.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _by(records: list[dict], *keys: str) -> dict:
    out: dict = defaultdict(list)
    for r in records:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def scores_table(records: list[dict], regime: str) -> list[str]:
    rows = [
        "| strategy | routing | score (mean ± 95% CI) | seeds | routing accuracy | adapters | train s |",
        "|---" * 7 + "|",
    ]
    groups = _by([r for r in records if r["regime"] == regime and r["embedder"] == "minilm"], "strategy", "routing")
    for s in STRATEGIES:
        for routing in ("global", "local", "oracle", "none"):
            rs = groups.get((s, routing))
            if not rs:
                continue
            acc = [r["routing_accuracy"] for r in rs if r.get("routing_accuracy") is not None]
            rows.append(
                f"| {s} | {routing}{' (compared)' if routing == PRIMARY[s] else ''} | "
                f"{_fmt(*ci95([r['score'] for r in rs]))} | {len(rs)} | "
                f"{f'{np.mean(acc):.2f}' if acc and routing == 'global' else '–'} | {rs[0]['adapters']} | "
                f"{np.mean([r['train_s'] for r in rs]):.0f} |"
            )
    return rows


def paired(records: list[dict], regime: str) -> dict[str, dict]:
    """Per baseline: FedRouter(global) − baseline(primary mode) over the seeds both have."""
    rs = [r for r in records if r["regime"] == regime and r["embedder"] == "minilm"]
    ours = {r["seed"]: r["score"] for r in rs if r["strategy"] == "fedrouter" and r["routing"] == "global"}
    out = {}
    for s in STRATEGIES[1:]:
        theirs = {r["seed"]: r["score"] for r in rs if r["strategy"] == s and r["routing"] == PRIMARY[s]}
        seeds = sorted(set(ours) & set(theirs))
        if not seeds:
            continue
        diff = [ours[k] - theirs[k] for k in seeds]
        mean_theirs = float(np.mean([theirs[k] for k in seeds]))
        rel = (float(np.mean([ours[k] for k in seeds])) - mean_theirs) / mean_theirs if mean_theirs > 0 else None
        out[s] = {"seeds": seeds, "diff": ci95(diff), "relative": rel}
    return out


def paired_table(records: list[dict], regime: str) -> list[str]:
    rows = [
        "| baseline (as used) | FedRouter − baseline (mean ± 95% CI) | relative | seeds | CI above 0 |",
        "|---" * 5 + "|",
    ]
    for s, d in paired(records, regime).items():
        mean, half = d["diff"]
        above = "–" if np.isnan(half) else ("yes" if mean - half > 0 else "no")
        rel = "–" if d["relative"] is None else f"{d['relative']:+.1%}"
        rows.append(
            f"| {s} ({PRIMARY[s]}) | {mean:+.3f}{'' if np.isnan(half) else f' ± {half:.3f}'} | {rel} | {len(d['seeds'])} | {above} |"
        )
    return rows


def goal_lines(records: list[dict], regime: str) -> list[str]:
    """The issue's goals, checked against the records (sentences built from the numbers)."""
    d = paired(records, regime)
    lines = []
    if regime == "interference" and "fedavg" in d:
        rel, (mean, half) = d["fedavg"]["relative"], d["fedavg"]["diff"]
        met = rel is not None and rel >= PAPER["interference"] and not np.isnan(half) and mean - half > 0
        lines.append(
            f"- Goal: FedRouter ≥ +{PAPER['interference']:.1%} relative over FedAvg with the paired CI above 0: "
            f"measured {rel:+.1%}, difference {_fmt(mean, half)} over {len(d['fedavg']['seeds'])} seed(s): "
            f"**{'met' if met else 'not met'}**."
        )
    if regime == "interference" and "oracle" in d:
        rel = d["oracle"]["relative"]
        lines.append(
            f"- Goal: within 2% of oracle: FedRouter is {rel:+.1%} relative to oracle over "
            f"{len(d['oracle']['seeds'])} seed(s): **{'met' if rel is not None and rel >= -0.02 else 'not met'}**."
        )
    if regime == "generalization" and "local" in d:
        rel = d["local"]["relative"]
        lines.append(
            f"- Goal: ≥ +{PAPER['generalization']:.0%} relative over client-centric (`local`): measured "
            f"{rel:+.1%} over {len(d['local']['seeds'])} seed(s): "
            f"**{'met' if rel is not None and rel >= PAPER['generalization'] else 'not met'}**."
        )
    return lines


def embedder_table(records: list[dict]) -> list[str]:
    rs = [r for r in records if r["strategy"] == "fedrouter" and r["routing"] == "global"]
    if len({r["embedder"] for r in rs}) < 2:
        return []
    rows = [
        "| regime | embedder | routing accuracy | routing purity | score (mean ± 95% CI) | seeds |",
        "|---" * 6 + "|",
    ]

    def mean_of(group: list[dict], key: str) -> str:
        vals = [r[key] for r in group if r.get(key) is not None]
        return f"{np.mean(vals):.2f}" if vals else "–"

    for (regime, emb), group in sorted(_by(rs, "regime", "embedder").items()):
        rows.append(
            f"| {regime} | {emb} | {mean_of(group, 'routing_accuracy')} | {mean_of(group, 'routing_purity')} | "
            f"{_fmt(*ci95([r['score'] for r in group]))} | {len(group)} |"
        )
    return rows


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [g for g in ("dual", "interference", "generalization") if any(r["regime"] == g for r in records)]
    fig, axes = plt.subplots(2, len(regimes), figsize=(5 * len(regimes), 7), squeeze=False)
    for j, regime in enumerate(regimes):
        rs = [r for r in records if r["regime"] == regime and r["embedder"] == "minilm"]
        names, means, halves = [], [], []
        for s in STRATEGIES:
            group = [r for r in rs if r["strategy"] == s and r["routing"] == PRIMARY[s]]
            if group:
                m, h = ci95([r["score"] for r in group])
                names.append(s), means.append(m), halves.append(0 if np.isnan(h) else h)
                curves = np.array([r["curve"] for r in group if r.get("curve")], dtype=float)
                if len(curves):
                    axes[1][j].plot(np.arange(1, curves.shape[1] + 1), np.nanmean(curves, 0), marker="o", label=s)
        axes[0][j].bar(names, means, yerr=halves, capsize=3)
        axes[0][j].set_title(f"{regime}: score, mean ± 95% CI")
        axes[0][j].set_ylim(0, 1)
        axes[0][j].tick_params(axis="x", rotation=30)
        axes[1][j].set_title(f"{regime}: score after each round")
        axes[1][j].set_xlabel("round")
        axes[1][j].xaxis.get_major_locator().set_params(integer=True)
        axes[1][j].set_ylim(0, 1)
        axes[1][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


READING = """How to read these tables. Each strategy is compared as it is used: FedRouter and oracle through
global routing (the gateway's `model="auto"`), client-centric strategies through each client's own
adapter (`none`); their other modes are shown too. `routing accuracy`: the share of test prompts
that global routing sends to the adapter scoring best on their task. CIs are over seeds (t-distribution);
with one seed there is none. Steps: a one-adapter strategy (fedavg, fedavg-matched, local, clustered,
FLoRAL) takes `local_steps` per client and round; FedRouter and oracle train each of a client's
clusters for `local_steps` (`cluster_steps = full`, as the FedRouter reference code does), so a client
with two clusters spends twice the compute; records made with `shared` (the client's steps split
between its clusters: matched compute, each task adapter then gets fewer updates) say so in the
profile's header. `fedavg-matched` (rank K·r, the same alpha/r scaling) takes larger effective steps
than rank-r adapters. Profiles whose settings keep steps low (chosen for the time budget of a 2-core
machine) favour shared adapters; more local steps are what the paper's regime uses.
Which strategies and seeds ran is in each table: a missing row did not run."""


TASK_CENTRIC = ("fedrouter", "oracle")  # the strategies the cluster-step protocol changes
_SAME = ("rounds", "local_steps", "test_per_task", "train_per_task", "lora_r", "k_global", "tasks")


def _borrowed(records: list[dict], profile: str, rs: list[dict]) -> list[dict]:
    """For a profile that only changes the cluster-step protocol (FedRouter and oracle records
    alone), the one-adapter strategies' records of the profile whose settings are otherwise the same."""
    if not rs or any(r["strategy"] not in TASK_CENTRIC for r in rs):
        return []
    out = []
    for r in records:
        if r["profile"] == profile or r["strategy"] in TASK_CENTRIC:
            continue
        if any(
            x["regime"] == r["regime"] and all(x["settings"].get(k) == r["settings"].get(k) for k in _SAME) for x in rs
        ):
            out.append(r)
    return out


def markdown(records: list[dict] | None = None, png_dir: Path = RECORDS.parent) -> str:
    """The training section of benchmarks/README.md, one sub-section per profile (full, quick)."""
    records = load() if records is None else records
    if not records:
        return "### Training\n\n(no records yet: `make bench-train`)"
    out = [
        "### Training: FedRouter vs baselines (rendered from `results/training_runs.jsonl`)",
        "",
        READING,
        "",
    ]
    for profile in sorted({r["profile"] for r in records}):
        rs = [r for r in records if r["profile"] == profile]
        borrowed = _borrowed(records, profile, rs)
        rs += borrowed
        s, m = rs[0]["settings"], rs[0]["machine"]
        png = f"training_{profile}.png"
        plot(rs, png_dir / png)
        out += [
            f"#### Profile `{profile}` ({m['cores']} cores {m['cpu']}, torch {m['torch']}, {m['date']})",
            "",
            f"SmolLM2-135M, LoRA on {s['lora_targets']}, {s['rounds']} rounds × {s['local_steps']} steps, batch "
            f"{s['batch_size']}, {s['train_per_task']} training samples per client and task, {s['test_per_task']} "
            "held-out test prompts per client and task (disjoint from training by construction). Score: exact "
            f"match. Seeds: {sorted({r['seed'] for r in rs})}. FedRouter / oracle cluster steps: "
            f"{', '.join(sorted({r['settings'].get('cluster_steps', 'shared') for r in rs if r['strategy'] in ('fedrouter', 'oracle')}))}"
            f". ![training](results/{png})"
            + (
                f" The one-adapter strategies ({', '.join(sorted({r['strategy'] for r in borrowed}))}) are the "
                f"records of profile `{borrowed[0]['profile']}`: the same settings, and the cluster-step "
                "protocol does not change them (one cluster per client)."
                if borrowed
                else ""
            ),
            "",
        ]
        for regime in ("dual", "interference", "generalization"):
            if not any(r["regime"] == regime for r in rs):
                continue
            out += [
                f"**{regime}**",
                "",
                *scores_table(rs, regime),
                "",
                *paired_table(rs, regime),
                "",
                *goal_lines(rs, regime),
                "",
            ]
        emb = embedder_table(rs)
        if emb:
            out += ["**Embedder: MiniLM vs base LLM (mean-pooled SmolLM2, the paper's)**", "", *emb, ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
