"""`make bench-train`: FedRouter against its baselines over several seeds, as records.

Regimes (the training of `dual` also gives `generalization`: same releases, other test sets):
- `dual`: 4 tasks (add, capital, news_topic, modernize), 4 clients with two tasks each, rank 8,
  K = 4; evaluated on each client's own tasks;
- `generalization`: the `dual` releases evaluated on each client's tasks it never trained on;
- `interference`: 8 tasks over 8 clients (two each, every task at two clients), rank 2, K = 8:
  more tasks than one rank-2 adapter holds.
The suite (SUITE_NOTES) was fixed before the comparison, from FedAvg's scores alone in the
earlier records, never from which strategy wins.
Strategies: fedrouter, fedavg, fedavg-matched (one adapter of rank K·r), clustered, floral,
local, oracle; plus fedrouter with the base-LLM embedder (the paper's) and the static embedder
distilled from MiniLM (the fast one) beside MiniLM, in the regimes of `--base-llm-regimes`
(default dual: base-llm costs a few minutes a run).

Every strategy trains at the same counted compute per client and round: FedRouter and oracle
train one local cluster per client and round, round-robin, as the FedRouter reference's Flower
launcher does (training/schedule.py quotes its lines), so a client spends `local_steps` steps of
`batch_size` samples a round like every one-adapter strategy. Every record carries what its run
counted (`counted`: optimizer steps and samples per client and round, summed by the clients while
training) and the commit it ran on; the report compares two strategies only where those agree.
`fedavg`'s runs also score the base model without adapters (records with strategy `base`).

Every (regime, strategy, seed, routing mode, embedder) appends one JSON line to
benchmarks/results/training_runs.jsonl; tables, CIs and plots are rendered from those lines by
benchmarks/training_tables.py (`python -m benchmarks.report`). Routing modes: `global` (the
gateway's), `local` (among the client's clusters), `oracle` (best adapter per task), `none`
(the client's own adapter: client-centric strategies).

    python -m benchmarks.training_bench --quick            # <= 15 min on 2 cores: dual, 1 seed, 3 strategies
    python -m benchmarks.training_bench                    # full (<= 2 h): dual, 5 strategies, seeds 0,1,2
    python -m benchmarks.training_bench --regimes interference --strategies fedrouter,fedavg --seeds 0,1
    python -m benchmarks.training_bench --regimes interference --strategies fedrouter,fedavg \
        --lr-sweep 1e-3,3e-3,1e-2,3e-2 --seeds 0,1,2  # the committed interference sweep (~2 h)
    python -m benchmarks.training_bench --profile long     # 16 rounds at the lrs full's sweep chose (~1.5 h)
    python -m benchmarks.training_bench --profile longer   # 32 rounds, FedRouter and FedAvg in dual (~30 min a seed)
    python -m benchmarks.training_bench --profile longest  # 48 rounds, the same pair (~46 min a seed)
    python -m benchmarks.training_bench --profile longest --lr-sweep 3e-3,1e-2 --sweep-only --seeds 0
        # are `full`'s lrs still the best at 48 rounds? the pair swept on validation at this budget
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from benchmarks.stack import RESULTS, machine
from benchmarks.training_protocol import (  # noqa: F401 (re-exported for the report)
    BASE,
    MODES,
    PROFILE_KEYS,
    PROFILES,
    REGIMES,
    ROUTING,
    STRATEGIES,
    SUITE_NOTES,
)

RECORDS = RESULTS / "training_runs.jsonl"


def source_commit(root: Path = Path(__file__).resolve().parents[1]) -> dict:
    """The git commit of the code a run uses, and whether the tree differed from it (results excluded)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results"))
    except (OSError, subprocess.CalledProcessError):
        # a copy of the tree without its history (a lent GPU machine): the commit its sender
        # checked out, clean, as scripts/device_reference.sh passes it
        rev = os.environ.get("FEDROUTER_SOURCE_COMMIT")
        return {"rev": rev, "dirty": False if rev else None}
    return {"rev": rev, "dirty": dirty}


def counted(history: list[dict]) -> dict:
    """Steps and samples per client and round, from what the clients reported while training
    (the release manifest's history): the mean, and the range (equal when every client and round did the same)."""
    steps = [v for h in history for v in h.get("steps", {}).values()]
    samples = [v for h in history for v in h.get("samples", {}).values()]
    if not steps:
        raise ValueError("the release's history has no counted steps")
    return {
        "steps_per_client_round": float(sum(steps) / len(steps)),
        "samples_per_client_round": float(sum(samples) / len(samples)),
        "steps_range": [min(steps), max(steps)],
        "samples_range": [min(samples), max(samples)],
    }


def _append(record: dict, path: Path = RECORDS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run_one(
    regime: str,
    strategy: str,
    seed: int,
    embedder: str,
    profile: str,
    p: dict,
    work: Path,
    records: Path,
    commit: dict,
    validation: bool = False,
    extra: dict | None = None,
) -> float:
    """Train once, evaluate the final release in the strategy's modes on each of the regime's
    test sets (and the earlier rounds' releases in its first mode: the curve); append records.

    `validation` (the lr sweep): train without a validation part carved from each client's training
    samples and score only on that part, in the first mode, without a curve. `extra`: more fields
    for the records. Returns the first mode's score on the first test set."""
    from fedrouter.training.run import train

    cfg = run_config(regime, strategy, seed, embedder, p, work, validation)
    out = Path(cfg.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    release = train(cfg, quiet=True)
    train_s = time.monotonic() - started
    return record_run(cfg, regime, embedder, profile, p, release.path, train_s, records, commit, validation, extra)


def run_config(regime: str, strategy: str, seed: int, embedder: str, p: dict, work: Path, validation: bool = False):
    """The TrainConfig of one run of the benchmark (its folder: work/<regime>-<strategy>-<embedder>-s<seed>)."""
    from fedrouter.training.base_model import prepare_base_model
    from fedrouter.training.config import TrainConfig

    spec = {k: v for k, v in REGIMES[regime].items() if k != "evaluate"}
    base = str(prepare_base_model())
    out = work / f"{regime}-{strategy}-{embedder}-s{seed}"
    emb = {
        "minilm": {"embedder_kind": "sentence-transformers"},
        "base-llm": {"embedder_kind": "base-llm", "embedder": base},
        "static": {"embedder_kind": "static"},  # distilled from MiniLM (router/static_embed.py)
    }[embedder]
    return TrainConfig(
        strategy=strategy,
        out=str(out),
        scenario="dual",
        seed=seed,
        base_model=base,
        lora_alpha=2 * spec["lora_r"],
        rounds=p["rounds"],
        local_steps=p["local_steps"],
        schedule=p["schedule"],
        lr_schedule=p["lr_schedule"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        base_dtype=p["base_dtype"],
        test_per_task=p["test_per_task"],
        validation=validation,
        release_every_round=not validation,
        **spec,
        **emb,
    )


def record_run(
    cfg,
    regime: str,
    embedder: str,
    profile: str,
    p: dict,
    release_path: Path,
    train_s: float,
    records: Path,
    commit: dict,
    validation: bool = False,
    extra: dict | None = None,
) -> float:
    """Evaluate a trained run's final release in the strategy's modes on each of the regime's test
    sets (and the earlier rounds' releases: the curve) and append its records (see `run_one`)."""
    from fedrouter.router.release import load_release
    from fedrouter.training.config import TrainConfig
    from fedrouter.training.data.scenarios import scenario_from_config
    from fedrouter.training.evaluate import evaluate_release

    strategy, seed, out = cfg.strategy, cfg.seed, Path(cfg.out)
    release = load_release(release_path)
    every = p["curve_every"]  # the curve: the releases of every `every`-th round, and the last
    rounds = [d for d in (out / "releases").glob("v*") if int(d.name[1:]) % every == 0 and int(d.name[1:]) < cfg.rounds]
    rounds = sorted(rounds, key=lambda d: int(d.name[1:]))
    curve_rounds = [int(d.name[1:]) for d in rounds] + [cfg.rounds]
    settings = {k: v for k, v in cfg.to_record().items() if k not in ("out", "base_model", "strategy", "seed")}
    settings["curve_every"] = every
    compute = counted(release.manifest.training["history"])
    idle = {k: 0.0 if k.endswith("round") else [0, 0] for k in compute}
    first, scores = MODES[strategy][0], []
    test_sets = {regime: "dual"} if validation else REGIMES[regime]["evaluate"]
    for name, scenario_name in test_sets.items():
        scenario = scenario_from_config(TrainConfig(**{**cfg.to_record(), "scenario": scenario_name}))
        t0 = time.monotonic()
        # oracle routing picks each task's adapter on training-part prompts, never on test prompts
        picks = [x for c in scenario.clients for x in c.train]
        modes = (first,) if validation else MODES[strategy]
        result = evaluate_release(release.path, scenario, modes=modes, validation=picks, dtype=cfg.base_dtype)
        scores.append(result["modes"][first])
        earlier = rounds if name == regime else []  # the curve on the regime's own test set only
        curve = [
            evaluate_release(r, scenario, modes=(first,), dtype=cfg.base_dtype)["modes"].get(first) for r in earlier
        ] + [result["modes"].get(first)]
        eval_s = time.monotonic() - t0
        for mode, score in result["modes"].items():
            _append(
                {
                    "regime": name,
                    "strategy": BASE if mode == "base" else strategy,
                    "seed": seed,
                    "routing": ROUTING[mode],
                    "embedder": embedder,
                    "score": score,
                    "per_task": result["per_task"][mode],
                    "per_client": result["per_client"][mode],
                    "curve": curve if mode == first else None,
                    "curve_rounds": (curve_rounds if earlier else curve_rounds[-1:]) if mode == first else None,
                    "routing_accuracy": result.get("routing_agrees_with_oracle"),
                    "routing_purity": result.get("routing_purity"),
                    "n": result["n"],
                    "adapters": 0 if mode == "base" else len(release.manifest.adapters),
                    "counted": idle if mode == "base" else compute,
                    "train_s": 0.0 if mode == "base" else round(train_s, 1),
                    "train_samples": None
                    if mode == "base"
                    else compute["samples_per_client_round"] * cfg.rounds * cfg.num_clients,
                    "eval_s": round(eval_s, 1),
                    "profile": profile,
                    "profile_settings": {k: p[k] for k in PROFILE_KEYS},
                    "settings": settings,
                    "commit": commit,
                    **(extra or {}),
                    "machine": machine(),
                },
                records,
            )
        print(
            f"{name} {strategy} ({embedder}) seed {seed}: {result['modes']} (train {train_s:.0f} s, eval {eval_s:.0f} s)"
        )
    return scores[0]


def swept_before(records: Path | None, profile: str, seed: int, p: dict) -> dict[tuple[str, str, float], float]:
    """(regime, strategy, lr) -> score (the strategy's first mode), from the usable `profile` records
    of `seed` in `records` whose settings are `p`'s but for the lr: a sweep (`-sweep` records)
    resumed or widened runs only the grid points it has no record of, and a swept strategy whose
    sweep chose the profile's own lr runs only where the profile has no record of it."""
    from benchmarks.training_protocol import PRIMARY, refusal

    if records is None or not records.exists():
        return {}
    fixed = {k: v for k, v in p.items() if k in PROFILE_KEYS and k != "lr"}
    out = {}
    for line in records.read_text().splitlines():
        r = json.loads(line) if line.strip() else None
        if not r or r.get("profile") != profile or r["seed"] != seed or r.get("embedder") != "minilm":
            continue
        if r["routing"] != PRIMARY[r["strategy"]] or refusal(r):
            continue
        if all(r["settings"].get(k) == v for k, v in fixed.items()):
            out[(r["regime"], r["strategy"], r["settings"]["lr"])] = r["score"]  # the latest record wins
    return out


def sweep_lr(regimes, strategies, seed, grid, profile, p, work, records, commit) -> dict:
    """Per (regime, strategy): the lr of `grid` whose run scores best on the validation split carved
    from the training data (seed `seed`, the strategy's first mode); every run is a record of
    profile `<profile>-sweep`. The same grid and budget for every strategy; a grid point already
    recorded (`swept_before`) is not run again."""
    chosen = {}
    done = swept_before(records, f"{profile}-sweep", seed, p)
    for regime in regimes:
        for strategy in strategies:
            scores = {}
            for lr in grid:
                if (regime, strategy, lr) in done:
                    scores[lr] = done[(regime, strategy, lr)]
                    print(f"{regime} {strategy} lr {lr:g}: recorded before (validation {scores[lr]:.3f})")
                    continue
                scores[lr] = run_one(
                    regime, strategy, seed, "minilm", f"{profile}-sweep", {**p, "lr": lr}, work, records, commit, True
                )
            best = max(grid, key=lambda lr: scores[lr])
            chosen[(regime, strategy)] = {"grid": grid, "scores": [scores[lr] for lr in grid], "chosen": best}
    return chosen


def recorded_choices(records, profile, seed, p, regimes, strategies) -> dict:
    """Per (regime, strategy): the lr `profile`'s recorded sweep (seed `seed`) chose, over the grid
    it recorded for that pair (grids may differ between regimes); nothing runs. A pair without
    recorded sweep points stops the bench with the command that sweeps it."""
    done = swept_before(records, f"{profile}-sweep", seed, p)
    chosen, missing = {}, []
    for regime in regimes:
        for strategy in strategies:
            scores = {lr: sc for (g, s, lr), sc in done.items() if (g, s) == (regime, strategy)}
            if not scores:
                missing.append(f"{regime} {strategy}")
                continue
            grid = sorted(scores)
            chosen[(regime, strategy)] = {
                "grid": grid,
                "scores": [scores[lr] for lr in grid],
                "chosen": max(grid, key=lambda lr: scores[lr]),
            }
    if missing:
        raise SystemExit(
            f"`{profile}`'s sweep has no records at seed {seed} for {', '.join(missing)}: sweep them first "
            f"(--profile {profile} --regimes {','.join(regimes)} --strategies {','.join(strategies)} --lr-sweep ...)"
        )
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the quick profile (<= 15 min); the same as --profile quick")
    ap.add_argument(
        "--profile", choices=sorted(PROFILES), help="full (the default), quick, long (16 rounds at the lrs "
        "`full`'s recorded sweep chose per regime and strategy: a pair it has not swept stops the bench), "
        "longer (32 rounds, the same lrs, FedRouter and FedAvg in dual), longest (48 rounds, the same), "
        "or reference (a GPU's)",
    )  # fmt: skip
    ap.add_argument("--regimes", help="comma-separated: dual, interference (default: the profile's)")
    ap.add_argument("--strategies", help=f"comma-separated, of {','.join(STRATEGIES)} (default: the profile's)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the profile's)")
    ap.add_argument(
        "--embedders",
        help="minilm: every strategy; base-llm, static: fedrouter only (minutes a run); default: the profile's",
    )
    ap.add_argument(
        "--base-llm-regimes", default="dual", help="regimes where fedrouter also runs with the other embedders"
    )
    ap.add_argument("--work", default="runs/bench/training_runs")
    ap.add_argument("--records", default=str(RECORDS), help="JSONL file the records are appended to")
    ap.add_argument(
        "--deadline-min", type=float, help="start no seed's run that the longest run so far would carry past this "
        "many minutes from the start (a lent machine's time; an --lr-sweep runs whole first); what is left is listed",
    )  # fmt: skip
    for key in ("rounds", "local_steps", "test_per_task"):
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, help="override the profile's value (smoke runs)")
    ap.add_argument(
        "--schedule", choices=["round-robin", "shared", "full"], help="override the profile's (a profile of its own)"
    )
    ap.add_argument(
        "--lr-sweep",
        help="comma-separated lrs, e.g. 3e-4,1e-3,3e-3: each strategy first picks its lr on a validation split "
        "carved from the training data (the first seed), then runs at it (profile <profile>-swept); where it "
        "picks the profile's own lr, the profile's records stand for it (run only where a seed has none)",
    )
    ap.add_argument(
        "--sweep-seed", type=int, help="the seed whose sweep picks the lr (default: the first of --seeds); "
        "its recorded grid points are reused, so more seeds run at the lr it chose"
    )  # fmt: skip
    ap.add_argument(
        "--sweep-only", action="store_true", help="with --lr-sweep: sweep at this profile's own budget (records "
        "of profile <profile>-sweep, even where its lrs come from another profile's sweep) and stop: a check "
        "that the lrs it runs at are still the best at its budget; its runs at the chosen lrs are not rerun"
    )  # fmt: skip
    args = ap.parse_args()
    profile = "quick" if args.quick else (args.profile or "full")
    p = dict(PROFILES[profile])
    keys = ("rounds", "local_steps", "test_per_task", "schedule")
    overridden = {k: getattr(args, k) for k in keys if getattr(args, k) and getattr(args, k) != p[k]}
    if overridden:
        p.update(overridden)
        profile += "-custom"
    regimes = args.regimes.split(",") if args.regimes else p["regimes"]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else p["seeds"]
    commit = source_commit()  # before the first record changes the tree
    started = time.monotonic()
    strategies = (args.strategies or p["strategies"]).split(",")
    work, records = Path(args.work), Path(args.records)
    swept = {}
    if args.sweep_only:
        if not args.lr_sweep:
            raise SystemExit("--sweep-only needs --lr-sweep")
        grid = [float(x) for x in args.lr_sweep.split(",")]
        sweep_seed = args.sweep_seed if args.sweep_seed is not None else seeds[0]
        chosen = sweep_lr(regimes, strategies, sweep_seed, grid, profile, p, work, records, commit)
        for (regime, strategy), s in chosen.items():
            print(f"{regime} {strategy}: validation {dict(zip(s['grid'], s['scores']))}, best lr {s['chosen']:g}")
        print(f"done in {time.monotonic() - started:.0f} s; records in {args.records}")
        return
    sweep_profile = p.get("lrs_from") or profile  # whose sweep picks the lrs (`long`: `full`'s)
    if args.lr_sweep or sweep_profile != profile:
        sp = p if sweep_profile == profile else dict(PROFILES[sweep_profile])
        sweep_seed = args.sweep_seed if args.sweep_seed is not None else (sp["seeds"] if sp is not p else seeds)[0]
        if args.lr_sweep:
            grid = [float(x) for x in args.lr_sweep.split(",")]
            swept = sweep_lr(regimes, strategies, sweep_seed, grid, sweep_profile, sp, work, records, commit)
        else:  # the lrs the other profile's sweep chose, from its records alone
            swept = recorded_choices(records, sweep_profile, sweep_seed, sp, regimes, strategies)
        for s in swept.values():
            s.update({"profile": f"{sweep_profile}-sweep", "seed": sweep_seed})
    deadline = Deadline(args.deadline_min, started)
    for seed in seeds:
        for regime in regimes:
            for strategy in strategies:
                for embedder in (args.embedders or p["embedders"]).split(","):
                    if embedder == "minilm" or (strategy == "fedrouter" and regime in args.base_llm_regimes.split(",")):
                        own_lr = swept and swept[(regime, strategy)]["chosen"] == p["lr"] and sweep_profile == profile
                        if own_lr and (regime, strategy, p["lr"]) in swept_before(records, profile, seed, p):
                            print(f"{regime} {strategy}: the sweep chose the profile's lr {p['lr']:g}; its "
                                  f"`{profile}` record of seed {seed} is the swept profile's (no second run)")  # fmt: skip
                        elif not deadline.room(f"{regime} {strategy} seed {seed}"):
                            continue
                        elif own_lr:  # the profile's own run, which the report reads as the swept one
                            deadline.timed(run_one, regime, strategy, seed, embedder, profile, p, work, records, commit)
                        elif swept:
                            s = swept[(regime, strategy)]
                            deadline.timed(
                                run_one, regime, strategy, seed, embedder, f"{profile}-swept", {**p, "lr": s["chosen"]},
                                work, records, commit, extra={"lr_sweep": s},
                            )  # fmt: skip
                        else:
                            deadline.timed(run_one, regime, strategy, seed, embedder, profile, p, work, records, commit)
    print(f"done in {time.monotonic() - started:.0f} s; records in {args.records}")
    if deadline.skipped:
        print(f"not run (--deadline-min {args.deadline_min:g}): {'; '.join(deadline.skipped)}")


class Deadline:
    """`--deadline-min`: a run starts only if the longest run so far still fits before the deadline
    (a machine lent for a fixed time keeps every record it finished, paired seed by seed)."""

    def __init__(self, minutes: float | None, started: float):
        self.end = started + minutes * 60 if minutes else None
        self.longest = 0.0
        self.skipped: list[str] = []

    def room(self, what: str) -> bool:
        if self.end is None or time.monotonic() + self.longest <= self.end:
            return True
        self.skipped.append(what)
        return False

    def timed(self, fn, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.longest = max(self.longest, time.monotonic() - t0)


if __name__ == "__main__":
    main()
