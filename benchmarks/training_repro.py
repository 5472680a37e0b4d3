"""Does this tree reproduce the committed training records? (issue 16: `make bench-train`
reproduces the committed headline.)

The speed work since the committed records were made changes how a step is rounded, not what it
computes (benchmarks/training_speed.py, training_step.py, training_threads.py). This checks what
that does to the scores a reader of benchmarks/README.md is given: it runs a profile's runs again
on this tree with `benchmarks.training_bench` (by default `full`'s headline pair, FedRouter and
FedAvg in `dual`, seeds 0-2, MiniLM; each run also scores `generalization`, and FedAvg's the base
model) into results/training_repro.jsonl, and sets every rerun record beside the committed record
of results/training_runs.jsonl with the same profile, test set, strategy, seed, routing, embedder
and settings: the two scores and their difference, the headline difference (FedRouter − FedAvg,
paired per seed, mean ± 95% CI) of each, and, for scale, one score's standard error from its test
prompts alone.

    python -m benchmarks.training_repro                 # full, 6 runs: ~25 min on 2 cores
    python -m benchmarks.training_repro --seeds 0       # one seed of the pair
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.stack import RESULTS
from benchmarks.training_bench import RECORDS

REPRO = RESULTS / "training_repro.jsonl"


def compared(rerun: list[dict], committed: list[dict]) -> list[dict]:
    """Each usable rerun record in its strategy's compared routing, with the committed record of the
    same key (None where there is none), the settings both record and differ on, and those only one records."""
    from benchmarks.training_protocol import PRIMARY, split
    from benchmarks.training_tables import run_key

    theirs = {run_key(r): r for r in split(committed)[0]}
    out = []
    for r in sorted(split(rerun)[0], key=lambda r: (r["regime"], r["strategy"], r["seed"])):
        if r["routing"] != PRIMARY.get(r["strategy"]):
            continue
        c = theirs.get(run_key(r))
        # a key only one side has was added or renamed in between (it is listed in the text, not compared)
        keys = set(r["settings"]) & set(c["settings"]) if c else set()
        differ = sorted(k for k in keys if r["settings"][k] != c["settings"][k])
        one_side = sorted(set(r["settings"]) ^ set(c["settings"])) if c else []
        out.append({"rerun": r, "committed": c, "differ": differ, "one_side": one_side})
    return out


def markdown(repro: Path = REPRO, records: Path = RECORDS) -> str:
    """The section of benchmarks/README.md; "" when nothing was rerun."""
    from benchmarks.training_protocol import BASE
    from benchmarks.training_tables import _fmt, binomial_se, commit_label, load, paired

    rerun = load(repro)
    if not rerun:
        return ""
    rows = compared(rerun, load(records))
    if not rows:
        return ""
    first = rows[0]["rerun"]
    m = first["machine"]
    profiles = sorted({x["rerun"]["profile"] for x in rows})
    then = sorted({commit_label(x["committed"]["commit"]) for x in rows if x["committed"]})
    now = sorted({commit_label(x["rerun"]["commit"]) for x in rows})
    one_side = sorted({k for x in rows for k in x["one_side"]})
    out = [
        "### Reproducing the committed training records on this tree (`benchmarks/training_repro.py`)",
        "",
        f"{m['cores']} cores {m['cpu']}, torch {m['torch']}, {m['date']}. Profile {', '.join(f'`{p}`' for p in profiles)}'s "
        f"runs again on commit {', '.join(now)}, each record beside the committed one of the same profile, test set, "
        f"strategy, seed, routing, embedder and settings (committed on {', '.join(then) or 'none'}). In between, the "
        "speed work changed how a training step is rounded, not what it computes (the training speed sections above); "
        "scores are exact match (ROUGE-1 for free text) on the same test prompts. `score SE`: one score's standard error "
        "from its test prompts alone (binomial, over its n prompts), the scale a difference between two runs of the "
        "same seed is read against; the base model's rows (no training) check that evaluation alone is unchanged."
        + (
            f" Settings that only one side records (added or renamed in between; not compared): {', '.join(one_side)}."
            if one_side
            else ""
        ),
        "",
        "| test set | strategy (routing) | seed | committed | rerun | rerun − committed | score SE |",
        "|---|---|---|---|---|---|---|",
    ]
    deltas: dict[str, list[float]] = {}
    for x in rows:
        r, c = x["rerun"], x["committed"]
        if c is None:
            was, delta = "none", "–"
        elif x["differ"]:
            was, delta = f"{c['score']:.3f}", f"settings differ: {', '.join(x['differ'])}"
        else:
            d = r["score"] - c["score"]
            if r["strategy"] != BASE:  # the base model's rows check the evaluation alone
                deltas.setdefault(r["regime"], []).append(d)
            was, delta = f"{c['score']:.3f}", f"{d:+.3f}"
        out.append(
            f"| {r['regime']} | {r['strategy']} ({r['routing']}) | {r['seed']} | {was} | {r['score']:.3f} | {delta} "
            f"| {binomial_se(r['score'], r.get('n')):.3f} |"
        )
    out.append("")
    for regime in sorted(deltas):
        ds = deltas[regime]
        matched = [x for x in rows if x["rerun"]["regime"] == regime and x["committed"] and not x["differ"]]
        seeds = sorted({x["rerun"]["seed"] for x in matched})
        now_d = paired([x["rerun"] for x in rows if x["rerun"]["regime"] == regime], regime).get(("fedavg", "none"))
        then_d = paired([x["committed"] for x in matched], regime).get(("fedavg", "none"))
        line = (
            f"- {regime}: rerun − committed over {len(ds)} trained records: mean {statistics.mean(ds):+.3f}, "
            f"largest |Δ| {max(abs(d) for d in ds):.3f}."
        )
        if now_d and then_d and "diff" in now_d and "diff" in then_d:
            (a, ha), (b, hb) = then_d["diff"], now_d["diff"]
            inside = abs(b - a) <= ha if ha == ha else None  # NaN: one seed, no CI
            line += (
                f" Headline FedRouter − FedAvg over seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: committed {_fmt(a, ha, '+')}, "
                f"rerun {_fmt(b, hb, '+')}"
                + (
                    ""
                    if inside is None
                    else f"; the rerun's mean lies {'inside' if inside else 'outside'} the committed CI"
                )
                + "."
            )
        out.append(line)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full")
    ap.add_argument("--regimes", default="dual")
    ap.add_argument("--strategies", default="fedrouter,fedavg")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", default="runs/bench/training_repro")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "benchmarks.training_bench", "--profile", args.profile, "--regimes", args.regimes]
    cmd += ["--strategies", args.strategies, "--seeds", args.seeds, "--embedders", "minilm"]
    cmd += ["--records", str(REPRO), "--work", args.work]
    subprocess.run(cmd, check=True)  # appends a record per run as it goes: an interrupted rerun keeps what ran
    print(markdown())


if __name__ == "__main__":
    main()
