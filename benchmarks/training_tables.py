"""Tables, confidence intervals and plots of the training benchmark, rendered from its records
(benchmarks/results/training_runs.jsonl, written by training_bench.py). No number is typed here.

- which records are used: a record must say what its run counted (`counted`) and the commit it ran
  on, and its settings must be its profile's (`refused`: the rest, each with its reason);
- mean ± 95% CI (t-distribution over seeds) per regime, strategy and routing mode, with the
  counted steps and samples per client and round, and the base model's row;
- paired per-seed differences FedRouter (global routing, MiniLM) − each partner as it is used
  (its first evaluation mode: the client's own adapter for client-centric strategies), only where
  both counted the same compute (`matched`); other pairs are listed as not matched, without a number;
- MiniLM against the base-LLM embedder: routing accuracy (global routing picks the adapter that
  scores best on the prompt's task), routing purity (share of a task's prompts sent to the task's
  most frequent adapter; independent of scores) and score;
- per-round curves and a bar chart with CI whiskers (PNG).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.training_bench import RECORDS
from benchmarks.training_plot import plot
from benchmarks.training_protocol import (
    BASE,
    PRIMARY,
    PROFILE_GAPS,
    PROFILES,
    REGIMES,
    ROWS,
    STRATEGIES,
    SUITE_NOTES,
    ci95,
    matched,
    split,
)

HEADLINE_HALF_WIDTH = 0.03  # the CI half-width that settles the headline difference (issue 16)
PAPER = {"interference": 0.061, "generalization": 1.36}  # relative gains the paper reports (best case)
TRAINED_IN = {t: g for g, spec in REGIMES.items() for t in spec["evaluate"]}  # test set -> training regime


def run_key(r: dict) -> tuple:
    """What names a record's run and score: (profile, regime, strategy, seed, routing, embedder)."""
    return (r["profile"], r["regime"], r["strategy"], r["seed"], r["routing"], r["embedder"])


def commit_label(commit: dict) -> str:
    """A record's commit as the tables name it: 10 hex digits, "(dirty)" where the tree differed."""
    return f"{(commit.get('rev') or 'unknown')[:10]}{' (dirty)' if commit.get('dirty') else ''}"


def load(path: Path = RECORDS) -> list[dict]:
    """Records, the latest one kept where a (profile, regime, strategy, seed, routing, embedder, lr)
    repeats (the lr: a sweep's grid points are records of one profile)."""
    if not path.exists():
        return []
    latest = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            latest[(*run_key(r), r.get("settings", {}).get("lr"))] = r
    return list(latest.values())


def _fmt(mean: float, half: float, sign: str = "") -> str:
    """`mean ± half` (`mean` alone when there is no CI); sign "+": always signed (a difference)."""
    return f"{mean:{sign}.3f}" if np.isnan(half) else f"{mean:{sign}.3f} ± {half:.3f}"


def _by(records: list[dict], *keys: str) -> dict:
    out: dict = defaultdict(list)
    for r in records:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def _counted(rs: list[dict]) -> str:
    steps = sorted({r["counted"]["steps_per_client_round"] for r in rs})
    samples = sorted({r["counted"]["samples_per_client_round"] for r in rs})
    return f"{'/'.join(f'{x:g}' for x in steps)} | {'/'.join(f'{x:g}' for x in samples)}"


def _seeds(seeds) -> str:
    return f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'}"


def scores_table(records: list[dict], regime: str) -> list[str]:
    rows = [
        "| strategy | routing | score (mean ± 95% CI) | seeds | counted steps / client / round | "
        "counted samples / client / round | routing accuracy | adapters | train s |",
        "|---" * 9 + "|",
    ]
    groups = _by([r for r in records if r["regime"] == regime and r["embedder"] == "minilm"], "strategy", "routing")
    for s in ROWS:
        for routing in ("global", "local", "oracle", "none"):
            rs = groups.get((s, routing))
            if not rs:
                continue
            acc = [r["routing_accuracy"] for r in rs if r.get("routing_accuracy") is not None]
            rows.append(
                f"| {s} | {routing}{' (compared)' if routing == PRIMARY[s] else ''} | "
                f"{_fmt(*ci95([r['score'] for r in rs]))} | {len(rs)} | {_counted(rs)} | "
                f"{f'{np.mean(acc):.2f}' if acc and routing == 'global' else '–'} | {rs[0]['adapters']} | "
                f"{np.mean([r['train_s'] for r in rs]):.0f} |"
            )
    return rows


def partners(regime: str) -> list[tuple[str, str]]:
    """(strategy, routing) FedRouter is compared with: every baseline as it is used and the base
    model; on unseen tasks also `local` through global routing (the paper's generalization partner)."""
    out = [(s, PRIMARY[s]) for s in STRATEGIES[1:]] + [(BASE, "none")]
    return out + [("local", "global")] if regime == "generalization" else out


def paired(records: list[dict], regime: str) -> dict[tuple[str, str], dict]:
    """Per partner: FedRouter(global) − partner over the seeds both have; `diff` only where every
    pair of records counted the same compute (else `unmatched` names the counts)."""
    rs = [r for r in records if r["regime"] == regime and r["embedder"] == "minilm"]
    ours = {r["seed"]: r for r in rs if r["strategy"] == "fedrouter" and r["routing"] == "global"}
    out = {}
    for s, routing in partners(regime):
        theirs = {r["seed"]: r for r in rs if r["strategy"] == s and r["routing"] == routing}
        seeds = sorted(set(ours) & set(theirs))
        if not seeds:
            continue
        off = [k for k in seeds if not matched(ours[k], theirs[k])]
        if off:
            a, b = ours[off[0]]["counted"], theirs[off[0]]["counted"]
            out[(s, routing)] = {
                "seeds": seeds,
                "unmatched": f"{a['steps_per_client_round']:g} vs {b['steps_per_client_round']:g} steps, "
                f"{a['samples_per_client_round']:g} vs {b['samples_per_client_round']:g} samples (seed {off[0]})",
            }
            continue
        diff = [ours[k]["score"] - theirs[k]["score"] for k in seeds]
        mean_theirs = float(np.mean([theirs[k]["score"] for k in seeds]))
        mean_ours = float(np.mean([ours[k]["score"] for k in seeds]))
        rel = (mean_ours - mean_theirs) / mean_theirs if mean_theirs > 0 else None
        out[(s, routing)] = {"seeds": seeds, "diff": ci95(diff), "relative": rel}
    return out


def paired_table(records: list[dict], regime: str) -> list[str]:
    rows = [
        "| partner (routing) | FedRouter − partner (mean ± 95% CI) | relative | seeds | CI above 0 | CI half-width ≤ 0.03 |",
        "|---" * 6 + "|",
    ]
    for (s, routing), d in paired(records, regime).items():
        if "unmatched" in d:
            rows.append(f"| {s} ({routing}) | not matched: {d['unmatched']} | – | {len(d['seeds'])} | – | – |")
            continue
        mean, half = d["diff"]
        above = "–" if np.isnan(half) else ("yes" if mean - half > 0 else "no")
        settled = "–" if np.isnan(half) else ("yes" if half <= HEADLINE_HALF_WIDTH else f"no ({half:.3f})")
        rel = "–" if d["relative"] is None else f"{d['relative']:+.1%}"
        rows.append(f"| {s} ({routing}) | {_fmt(mean, half, '+')} | {rel} | {len(d['seeds'])} | {above} | {settled} |")
    return rows


def headline_line(records: list[dict], regime: str) -> list[str]:
    """The headline difference (FedRouter − FedAvg at matched compute) and whether its CI settles it."""
    d = paired(records, regime).get(("fedavg", "none"))
    if not d:
        return []
    if "unmatched" in d:
        return [f"- Headline FedRouter − FedAvg: **not matched** ({d['unmatched']}): no comparison."]
    mean, half = d["diff"]
    if np.isnan(half):
        return [
            f"- Headline FedRouter − FedAvg: {mean:+.3f} from one seed: no CI; the target half-width "
            f"≤ {HEADLINE_HALF_WIDTH} needs seeds."
        ]
    lo, hi = mean - half, mean + half
    if half > HEADLINE_HALF_WIDTH:
        verdict = f"the half-width falls short of ≤ {HEADLINE_HALF_WIDTH} by {half - HEADLINE_HALF_WIDTH:.3f}"
    elif lo > 0:
        verdict = f"the half-width meets ≤ {HEADLINE_HALF_WIDTH}: FedRouter is ahead by {lo:.3f} to {hi:.3f}"
    elif hi < 0:
        verdict = f"the half-width meets ≤ {HEADLINE_HALF_WIDTH}: FedAvg is ahead by {-hi:.3f} to {-lo:.3f}"
    else:
        verdict = (
            f"the half-width meets ≤ {HEADLINE_HALF_WIDTH} and the CI covers 0: no difference is shown; "
            f"FedRouter ahead by more than {hi:.3f}, or FedAvg by more than {-lo:.3f}, is ruled out"
        )
    return [
        f"- Headline FedRouter − FedAvg: {mean:+.3f} ± {half:.3f} (95% CI over {len(d['seeds'])} seeds, "
        f"paired): {verdict}."
    ]


def tuning_line(
    before: list[dict],
    after: list[dict],
    regime: str,
    labels: tuple[str, str] = ("at one lr for all", "at each one's swept lr"),
) -> list[str]:
    """FedRouter − each one-adapter partner in two sets of records side by side: the profile's one lr
    beside each strategy's swept lr (how much of a difference the lr alone makes), or one budget
    beside a longer one."""
    out = []
    for partner in ("fedavg", "fedavg-matched"):
        a, b = paired(before, regime).get((partner, "none")), paired(after, regime).get((partner, "none"))
        if not a or not b or "diff" not in a or "diff" not in b:
            continue
        out.append(
            f"- FedRouter − {partner}: {_fmt(*a['diff'], '+')} {labels[0]} ({_seeds(a['seeds'])}), "
            f"{_fmt(*b['diff'], '+')} {labels[1]} ({_seeds(b['seeds'])})."
        )
    return out


def convergence_line(records: list[dict], regime: str) -> list[str]:
    """Whether the budget converged: FedAvg's last two evaluations (mean curve over seeds) differ by
    less than their standard error (binomial over the test prompts and seeds)."""
    curves = [r["curve"] for r in records if r["regime"] == regime and r["strategy"] == "fedavg" and r.get("curve")]
    curves = [c for c in curves if len(c) >= 2 and None not in c[-2:]]
    if not curves:
        return []
    n = sum(r["n"] for r in records if r["regime"] == regime and r["strategy"] == "fedavg" and r.get("curve"))
    last, before = float(np.mean([c[-1] for c in curves])), float(np.mean([c[-2] for c in curves]))
    se = binomial_se(last, n)
    verdict = "converged" if abs(last - before) < se else "not converged: a larger budget is needed"
    at = next((r.get("curve_rounds") for r in records if r.get("curve_rounds")), None)
    where = f"after rounds {at[-2]} and {at[-1]}" if at and len(at) >= 2 else "in its last two evaluations"
    return [
        f"- Budget: FedAvg scores {before:.3f} → {last:.3f} {where} (Δ {last - before:+.3f}, "
        f"standard error {se:.3f} over {n} test prompts): **{verdict}**."
    ]


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


READING = """How to read these tables. Each strategy is compared as it is used: FedRouter and oracle through
global routing (the gateway's `model="auto"`), client-centric strategies through each client's own
adapter (`none`); their other modes are shown too; `base` is the base model without adapters.
Compute: FedRouter and oracle train one local cluster per client and round, round-robin, as the
FedRouter reference's Flower launcher does (`server.py:98` `cluster_id = server_round % n_clusters`;
`client.py:146-152` trains that cluster's data for `max_steps`), so every strategy spends
`local_steps` steps per client and round. The counted columns are what the clients reported running;
a paired difference is shown only where both records counted the same steps and samples
("not matched" otherwise), and records without counts or commit, or whose settings differ from their
profile's, are refused (listed below each profile). `routing accuracy`: the share of test prompts
that global routing sends to the adapter scoring best on their task. CIs are over seeds
(t-distribution, paired per seed); with one seed there is none. `fedavg-matched` (rank K·r, the same
alpha/r scaling) takes larger effective steps than rank-r adapters at the same learning rate: every
strategy runs at the same per-round cosine; a profile without `-swept` runs every strategy at the
same lr, a `-swept` one at the lr each strategy chose in the same grid on a validation split carved
from its training data (`--lr-sweep`, the `-sweep` table); FLoRAL's router lr is the adaptors' lr times `router_lr_scale` = 1 (the reference's
`router_lr: ${lr}` under SGD; the ratio, since AdamW's step does not scale with the gradient; it follows
the same cosine). Oracle routing (`oracle` mode) picks each task's adapter on prompts from
the task's training part (`validation`), never on the test prompts it scores. `train s`: wall seconds of the run on its machine at the time (other work shared the cores),
not a cost comparison between rows. Which strategies and seeds ran is in each table: a missing row did not run.
Where FedRouter's routing accuracy is 1.00, its clusters are the tasks, as oracle's are: the FedRouter − oracle
difference then shows how much the order of training alone (which cluster a client trains first and
last, which samples a step draws) moves a score; where its CI excludes 0, the difference is
systematic, not only noise. One candidate, that the two number the same clusters differently so that
round-robin trains them in other rounds, is tested in the Schedule alignment section below."""


def suite_table(records: list[dict], regime: str) -> list[str]:
    """Per task: the base model's and FedAvg's scores (mean over seeds) and whether the task can
    separate strategies: not if FedAvg scores 1.0 on it in every seed (saturated), or no more than
    the base model plus 0.05 (not learned within the budget). Measured on FedAvg alone."""
    scored = [r for r in records if r["regime"] == regime and r.get("per_task")]
    base = [r for r in scored if r["strategy"] == BASE]
    avg = [r for r in scored if r["strategy"] == "fedavg" and r["routing"] == "none"]
    if not base or not avg:
        return []
    rows = ["| task | base model | FedAvg | seeds | separates strategies? |", "|---|---|---|---|---|"]
    for task in sorted(avg[0]["per_task"]):
        b = float(np.mean([r["per_task"][task] for r in base]))
        f = [r["per_task"][task] for r in avg]
        verdict = "no: saturated" if min(f) >= 1.0 else "no: not learned" if np.mean(f) <= b + 0.05 else "yes"
        rows.append(f"| {task} | {b:.2f} | {np.mean(f):.2f} | {len(f)} | {verdict} |")
    return rows


def _strategies_line(records: list[dict]) -> list[str]:
    """Which strategies this profile ran, and which it did not (a reader must not take a missing
    row for a loss)."""
    ran = [s for s in STRATEGIES if any(r["strategy"] == s for r in records)]
    missing = [s for s in STRATEGIES if s not in ran]
    if not missing:
        return []
    base = records[0]["profile"].removesuffix("-swept")
    flags = f"--profile {base} " if base in PROFILES and base != "full" else ""
    sweep = next((r["lr_sweep"] for r in records if r.get("lr_sweep")), None)
    if sweep and not PROFILES.get(base, {}).get("lrs_from"):
        flags += f"--lr-sweep {','.join(f'{lr:g}' for lr in sweep['grid'])} "
    return [
        f"Strategies run: {', '.join(ran)}. Not run at this profile: {', '.join(missing)} (the time budget; "
        f"`python -m benchmarks.training_bench {flags}--strategies {','.join(missing)}` adds them).",
        "",
    ]


def sweep_table(records: list[dict]) -> list[str]:
    """The lr sweep: each strategy's validation score at each lr of the grid (its first mode)."""
    rows = ["| regime | strategy | lr | validation score | seed | train s |", "|---" * 6 + "|"]
    firsts = [r for r in records if r["routing"] == PRIMARY.get(r["strategy"])]
    for r in sorted(firsts, key=lambda r: (r["regime"], r["strategy"], r["settings"]["lr"])):
        rows.append(
            f"| {r['regime']} | {r['strategy']} | {r['settings']['lr']:g} | {r['score']:.3f} | {r['seed']} "
            f"| {r['train_s']:.0f} |"
        )
    return rows


def sweep_choices(sweep: list[dict]) -> dict[tuple[str, str], float]:
    """(regime, strategy) -> the lr of the grid whose validation score is best (first mode), from a
    `-sweep` profile's usable records."""
    firsts = [r for r in sweep if r["routing"] == PRIMARY.get(r["strategy"])]
    return {
        key: max(rs, key=lambda r: r["score"])["settings"]["lr"]
        for key, rs in _by(firsts, "regime", "strategy").items()
    }


def own_budget_check(usable: list[dict], base_profile: str) -> list[str]:
    """For a profile that runs at the lrs another profile's sweep chose (`lrs_from`): whether its own
    sweep, at its own budget (`--sweep-only`), chooses the same lr per regime and strategy."""
    lrs_from = PROFILES.get(base_profile, {}).get("lrs_from")
    if not lrs_from:
        return []
    sweep = [
        r for r in usable if r["profile"] == f"{base_profile}-sweep" and r["routing"] == PRIMARY.get(r["strategy"])
    ]
    there = sweep_choices([r for r in usable if r["profile"] == f"{lrs_from}-sweep"])
    lines = []
    for (regime, strategy), rs in sorted(_by(sweep, "regime", "strategy").items()):
        by_lr = {r["settings"]["lr"]: r for r in rs}
        best, ran = max(by_lr, key=lambda lr: by_lr[lr]["score"]), there.get((regime, strategy))
        line = f"- {regime} {strategy}: lr {best:g} is the best here (validation {by_lr[best]['score']:.3f})"
        if ran is None:
            line += f"; `{lrs_from}`'s sweep has no records for it."
        elif ran == best:
            line += f", as `{lrs_from}`'s sweep chose: the lr its runs use stands at this budget."
        elif ran not in by_lr:
            line += f"; `{lrs_from}`'s sweep chose {ran:g}, the lr its runs use, not tried here."
        else:
            gap = by_lr[best]["score"] - by_lr[ran]["score"]
            se = math.hypot(*(binomial_se(by_lr[lr]["score"], by_lr[lr].get("n")) for lr in (best, ran)))
            if not math.isfinite(se):
                verdict = "with no prompt count to weigh it against: not the best at this budget."
            elif gap <= 2 * se:
                verdict = (
                    f"within the noise of one seed's validation scores (the difference's standard error, unpaired: "
                    f"at most ≈ {se:.3f}), "
                    "so it stands at this budget."
                )
            else:
                verdict = (
                    f"more than twice the difference's standard error (unpaired: at most ≈ {se:.3f}): not the best "
                    "at this budget."
                )
            line += f"; `{lrs_from}`'s sweep chose {ran:g}, the lr its runs use: {gap:.3f} behind here, {verdict}"
        lines.append(line)
    return lines


def binomial_se(score: float, n: int | None) -> float:
    """A score's standard error from test sampling alone, as if each of its `n` prompts scored 0 or 1:
    the most it can be for per-prompt scores in [0, 1] (ROUGE's included); NaN without a count."""
    if not n:
        return float("nan")
    s = min(max(score, 0.0), 1.0)
    return math.sqrt(max(s * (1 - s), 1e-9) / n)


def swept_records(usable: list[dict], base_profile: str) -> tuple[list[dict], list[str]]:
    """The records of profile `<base_profile>-swept`: each swept strategy at the lr its sweep chose.
    Where that lr is the base profile's own, the base profile's records are that run (the bench does
    not train it again); else the `-swept` runs. Returns (records, one line per strategy saying which)."""
    lrs_from = PROFILES.get(base_profile, {}).get("lrs_from")  # `long`: the lrs `full`'s sweep chose
    sweep = [r for r in usable if r["profile"] == f"{lrs_from or base_profile}-sweep"]
    choices = sweep_choices(sweep)
    grids = {k: sorted({r["settings"]["lr"] for r in rs}) for k, rs in _by(sweep, "regime", "strategy").items()}
    lr = PROFILES[base_profile]["lr"] if base_profile in PROFILES and not lrs_from else None
    out, notes = [], []
    for (regime, strategy), chosen in sorted(choices.items()):
        source = base_profile if chosen == lr else f"{base_profile}-swept"
        mine = [
            r
            for r in usable
            if r["profile"] == source
            and TRAINED_IN.get(r["regime"]) == regime
            and (r["strategy"] == strategy or (strategy == "fedavg" and r["strategy"] == BASE))
        ]
        out += mine
        seeds = sorted({r["seed"] for r in mine})
        edge = {grids[(regime, strategy)][-1]: "largest", grids[(regime, strategy)][0]: "smallest"}.get(chosen)
        notes.append(
            f"- {regime} {strategy}: lr {chosen:g}"
            + (f" (the {edge} of its grid: a wider grid might choose another)" if edge else "")
            + ", "
            + (
                f"the `{base_profile}` profile's own lr: its `{base_profile}` records"
                if chosen == lr
                else f"chosen by `{lrs_from}`'s sweep at its budget, its own runs"
                if lrs_from
                else "its own runs"
            )
            + (f" (seeds {seeds})" if seeds else ": none yet (not run at this profile)")
        )
    return out, notes


def markdown(records: list[dict] | None = None, png_dir: Path = RECORDS.parent) -> str:
    """The training section of benchmarks/README.md, one sub-section per profile."""
    records = load() if records is None else records
    if not records:
        return "### Training\n\n(no records yet: `make bench-train`)"
    usable, refused = split(records)
    out = [
        "### Training: FedRouter vs baselines (rendered from `results/training_runs.jsonl`)",
        "",
        READING,
        "",
        "Task suite (fixed before the comparison, from FedAvg's scores alone; `SUITE_NOTES` in training_bench.py):",
        "",
        *[f"- dropped {task}: {why}" for task, why in SUITE_NOTES["dropped"].items()],
        *[f"- added {task}: {why}" for task, why in SUITE_NOTES["added"].items()],
        f"- {SUITE_NOTES['unmeasured']}.",
        "",
    ]
    profiles = {r["profile"] for r in records}
    profiles |= {p.removesuffix("-sweep") + "-swept" for p in profiles if p.endswith("-sweep")}
    for profile in sorted(profiles):
        rs = [r for r in usable if r["profile"] == profile]
        bad = [(r, why) for r, why in refused if r["profile"] == profile]
        out += [f"#### Profile `{profile}`", ""]
        if profile.endswith("-swept"):
            base = profile.removesuffix("-swept")
            lrs_from = PROFILES.get(base, {}).get("lrs_from")
            if lrs_from:  # the same lrs at the other profile's budget
                same_lr = swept_records(usable, lrs_from)[0]
                rounds = (PROFILES[lrs_from]["rounds"], PROFILES[base]["rounds"])
                labels = (f"after {rounds[0]} rounds (`{lrs_from}-swept`)", f"after {rounds[1]} rounds (here)")
            else:
                same_lr = [r for r in usable if r["profile"] == base]
                labels = ("at one lr for all", "at each one's swept lr")
            rs, notes = swept_records(usable, base)
            out += ["Each strategy at the lr its sweep chose (the `-sweep` table):", "", *notes, ""]
        if rs and profile.endswith("-sweep"):
            check = own_budget_check(usable, profile.removesuffix("-sweep"))
            out += [
                "lr sweep: every strategy trained at each lr on its clients' training samples minus a "
                "carved validation part (every 5th), scored on that part; "
                + (
                    "a check of the lrs its `-swept` profile runs at:"
                    if check
                    else "the best lr is its `-swept` profile's."
                ),
                "",
                *sweep_table(rs),
                "",
                *([*check, ""] if check else []),
            ]
        elif rs:
            s, m = rs[0]["settings"], rs[0]["machine"]
            swept = defaultdict(set)  # training regime -> {(strategy, lr)}
            for r in rs:
                if r["strategy"] != BASE:
                    swept[TRAINED_IN[r["regime"]]].add((r["strategy"], r["settings"]["lr"]))
            lr_text = (
                "lr swept per regime and strategy ("
                + "; ".join(f"{g}: " + ", ".join(f"{k} {v:g}" for k, v in sorted(swept[g])) for g in sorted(swept))
                + ")"
                if profile.endswith("-swept")
                else f"lr {s['lr']:g}"
            )
            commits = sorted({commit_label(r["commit"]) for r in rs})
            png = f"training_{profile}.png"
            plot(rs, png_dir / png)
            out += [
                f"{m['cores']} cores {m['cpu']}{', ' + m['gpu'] if m.get('gpu') else ''}, torch {m['torch']}, "
                f"{m['date']}; commit {', '.join(commits)}. "
                f"SmolLM2-135M, LoRA on {s['lora_targets']}, {s['rounds']} rounds × {s['local_steps']} steps, batch "
                f"{s['batch_size']}, {lr_text} ({s['lr_schedule']} per round), schedule `{s['schedule']}`, "
                f"base weights {s.get('base_dtype', 'float32')}, curve every {s.get('curve_every', 1)} round(s), "
                f"{s['train_per_task']} training samples per client and task, {s['test_per_task']} held-out test "
                "prompts per client and task (disjoint from training by construction). Score: exact match "
                f"(ROUGE-1 for free text). Seeds: {sorted({r['seed'] for r in rs})}. ![training](results/{png})",
                "",
                *_strategies_line(rs),
            ]
            for regime in ("dual", "interference", "generalization"):
                if not any(r["regime"] == regime for r in rs):
                    gap = PROFILE_GAPS.get((profile.removesuffix("-swept"), regime), "")
                    out += [f"**{regime}**: no records at this profile. {gap}", ""]
                    continue
                suite = suite_table(rs, regime)
                out += [
                    f"**{regime}**",
                    "",
                    *(["Task suite check (FedAvg and the base model only):", "", *suite, ""] if suite else []),
                    *scores_table(rs, regime),
                    "",
                    *paired_table(rs, regime),
                    "",
                    *headline_line(rs, regime),
                    *(tuning_line(same_lr, rs, regime, labels) if profile.endswith("-swept") else []),
                    *convergence_line(rs, regime),
                    "",
                ]
            emb = embedder_table(rs)
            if emb:
                out += ["**Embedder: MiniLM vs base LLM (mean-pooled SmolLM2, the paper's)**", "", *emb, ""]
        if bad:
            reasons = defaultdict(int)
            for _, why in bad:
                reasons[why] += 1
            out += [
                f"Refused records of `{profile}`: "
                + "; ".join(f"{n} × {why}" for why, n in sorted(reasons.items()))
                + ".",
                "",
            ]
    for name, spec in PROFILES.items():  # a profile that has run nowhere yet, and where it would run
        if not any(p.removesuffix("-sweep").removesuffix("-swept") == name for p in profiles):
            shown = f"{name}-swept" if spec.get("lrs_from") else name
            out += [f"#### Profile `{shown}`", "", f"No records yet. {PROFILE_GAPS.get((name, 'dual'), '')}", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
