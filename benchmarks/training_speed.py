"""Seconds per training sample, before and after, in one run (issue 16's speed target).

The same federation (a profile's FedAvg in `dual`, by default `quick`'s: 4 clients, 2 rounds x 6
steps x batch 4, seed 0, MiniLM) is trained by `fedrouter train` from two checkouts of this repository: `before`, a
git worktree at `--before` (default 33eb673, the tree before the speed-ups), and `after`, this
working tree; alternating, `--pairs` times. Per run: wall seconds of the whole command (Python's
start, Ray's start, the clients' query, the rounds, the releases), seconds of the rounds alone (the
manifest's history), the counted samples, and the loss after each round (what is computed must
stay the same: the same steps on the same samples, so the same losses); then `fedrouter eval` of
the run's release from the same checkout (seconds, and scores: the same but for batching
round-off; `--no-eval` skips it). Result: results/training_speed.json (`--profile full`:
results/training_speed_full.json: a longer run, where the fixed costs of a process weigh less).

    python -m benchmarks.training_speed --pairs 3                    # ~12 min on 2 cores
    python -m benchmarks.training_speed --profile full --no-eval     # 8 rounds x 8 steps, ~12 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.stack import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "33eb673"  # main before mixed-adapter evaluation
# What `after` (this tree) changes in a run against `before`, written into the result when it runs.
CHANGES = (
    "What `after` changes: the frozen Linear weights held in bf16, as autocast uses them (bit for bit the "
    "same losses and LoRA tensors: tests/unit/test_training_learns.py), and attention through SDPA's math "
    "kernel while training on the CPU (the same function as the flash kernel, rounded differently: losses "
    "agree to bf16 rounding, not bit for bit; about as close to a float32 reference: benchmarks/training_step.py); "
    "evaluation holds the same bf16 weights; one pass per answer length with the adapters mixed in a batch. "
    "Since 2026-12-07: each training batch packed into one row (the prefix its samples share, the chat template's "
    "system prompt among it, once; no padding; a mask keeps the samples apart: the same loss and gradients, "
    "tests/unit/test_training_learns.py), and the server makes the fresh LoRA while the clients embed their samples. "
    "Since 2026-12-07 too: on a CPU, a client per core, one torch thread each, at once (was one client on every core: "
    "the same steps, their sums split between threads otherwise, so rounded otherwise: "
    "benchmarks/training_threads.py), and a task's corpus read only when the run has one of its tasks. "
    "Then, 2026-12-07: the LM head, tied to the embeddings, held as a bf16 copy of its own (the values autocast cast it to "
    "at every pass: bit for bit the same, tests/unit/test_training_learns.py). "
    "Last, 2026-12-08: `fedrouter train` imports the apps' modules and makes the fresh LoRA and the release's "
    "embedder while Ray's head starts (was: after it, the LoRA while the clients embed, every core busy); "
    "`fedrouter train` and `eval` end without Python's teardown of the modules they imported; the Bible "
    "verses cleaned with str methods and each verse's words found once (the same pairs: tests/unit/test_bible.py). "
    "Then, 2026-12-08: where no CUDA GPU can be, torch imported while Ray's head starts (was: before it), and the "
    "federation started without waiting for the fresh LoRA (the ServerApp waits for it after the clients' query); Flower's "
    "clients on the workers Ray starts with its head (PYTHONPATH in the environment, not a runtime environment, "
    "for which Ray started new ones); the server names the clients' embedder without loading it; it polls for its "
    "clients after 0.05 s (was: 1 s)."
)


def command(out: Path, profile: str = "quick") -> list[str]:
    from benchmarks.training_protocol import PROFILES, REGIMES

    p, spec = PROFILES[profile], REGIMES["dual"]
    sets = {
        "lora_r": spec["lora_r"],
        "lora_alpha": 2 * spec["lora_r"],
        "k_global": spec["k_global"],
        "batch_size": p["batch_size"],
        "lr": p["lr"],
        "embedder_kind": "sentence-transformers",
        "embedder": "all-MiniLM-L6-v2",
    }
    cmd = [sys.executable, "-m", "fedrouter.cli", "train", "--strategy", "fedavg", "--scenario", "dual"]
    cmd += ["--tasks", spec["tasks"], "--clients", str(spec["num_clients"]), "--rounds", str(p["rounds"])]
    cmd += ["--local-steps", str(p["local_steps"]), "--seed", "0", "--out", str(out)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def run_once(checkout: Path, out: Path, profile: str = "quick", evaluate: bool = True) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.monotonic()
    subprocess.run(command(out, profile), cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    eval_s, scores = None, None
    if evaluate:  # the release scored by the same checkout: every routing mode, its test set
        started = time.monotonic()
        ev = [sys.executable, "-m", "fedrouter.cli", "eval", "--release", str(out / "releases" / "latest")]
        subprocess.run([*ev, "--out", str(out / "eval")], cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
        eval_s = time.monotonic() - started
        scores = json.loads(next((out / "eval").glob("*.json")).read_text())["modes"]
    manifest = json.loads((out / "releases" / "latest" / "manifest.json").read_text())
    history = manifest["training"]["history"]
    samples = sum(v for h in history for v in h["samples"].values())
    rounds_s = sum(h["seconds"] for h in history)
    federation_s = manifest["training"]["seconds"]  # the ServerApp's run: clients' query, first adapters, rounds
    return {
        "train_s": round(wall, 2),
        "rounds_s": round(rounds_s, 2),
        # where the rest of the whole run went: Python, Ray and Flower starting and stopping (outside the
        # ServerApp), and inside it, before the rounds, the clients' query and the first adapters
        "start_stop_s": round(wall - federation_s, 2),
        "query_init_s": round(federation_s - rounds_s, 2),
        "samples": samples,
        "s_per_sample": wall / samples,
        "rounds_s_per_sample": rounds_s / samples,
        "loss": [h["loss"] for h in history],
        "eval_s": None if eval_s is None else round(eval_s, 2),
        "scores": scores,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--profile", default="quick", help="whose rounds, steps, batch size and lr (dual, FedAvg)")
    ap.add_argument("--no-eval", action="store_true", help="time training alone, not `fedrouter eval` of its release")
    ap.add_argument("--before", default=BEFORE, help="the git revision of `before`")
    ap.add_argument("--work", default="runs/bench/training_speed")
    ap.add_argument("--out", help="default: results/training_speed.json, or training_speed_<profile>.json")
    args = ap.parse_args()
    args.out = args.out or str(
        RESULTS / ("training_speed.json" if args.profile == "quick" else f"training_speed_{args.profile}.json")
    )
    work = Path(args.work).resolve()
    tree = work / "before-tree"
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=ROOT, check=True)
    checkouts = {"before": tree, "after": ROOT}
    runs_load = [round(os.getloadavg()[0], 2)]
    runs = []
    try:
        for i in range(args.pairs):
            for name, checkout in checkouts.items():
                r = run_once(checkout, work / name, args.profile, not args.no_eval)
                runs.append({"variant": name, "pair": i, **r})
                print(f"pair {i} {name}: {r['s_per_sample']:.3f} s/sample, rounds {r['rounds_s']:.0f} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    summary = {}
    for name in checkouts:
        rs = [r for r in runs if r["variant"] == name]
        summary[name] = {
            "checkout": args.before if name == "before" else "this tree",
            "s_per_sample": statistics.median(r["s_per_sample"] for r in rs),
            "rounds_s_per_sample": statistics.median(r["rounds_s_per_sample"] for r in rs),
            **{k: statistics.median(r[k] for r in rs) for k in ("train_s", "rounds_s", "start_stop_s", "query_init_s")},
            "loss": rs[0]["loss"],
            "eval_s": None if args.no_eval else statistics.median(r["eval_s"] for r in rs),
            "scores": rs[0]["scores"],
        }
    speedup = [
        b["s_per_sample"] / a["s_per_sample"]
        for b, a in zip(
            (r for r in runs if r["variant"] == "before"), (r for r in runs if r["variant"] == "after"), strict=True
        )
    ]
    from benchmarks.training_bench import source_commit
    from benchmarks.training_protocol import PROFILES, REGIMES

    p = PROFILES[args.profile]
    result = {
        "profile": args.profile,
        "settings": {
            "clients": REGIMES["dual"]["num_clients"],
            "rounds": p["rounds"],
            "local_steps": p["local_steps"],
            "batch_size": p["batch_size"],
        },  # fmt: skip
        "runs": runs,
        "summary": summary,
        "speedup_paired": speedup,
        "speedup_median": statistics.median(speedup),
        "goal": 2.0,
        "changes": CHANGES,
        "commit": source_commit(),
        "load_avg_1m": [runs_load[0], round(os.getloadavg()[0], 2)],  # before and after: what else ran
        "machine": machine(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"speed-up {result['speedup_median']:.2f}x (paired: {[round(x, 2) for x in speedup]}); wrote {args.out}")


def render(r: dict) -> str:
    s, m = r["summary"], r["machine"]
    from benchmarks.training_tables import commit_label

    after = f"`{commit_label(r['commit'])}`" if r.get("commit") else "this tree"  # the tree `after` ran on
    profile = r.get("profile", "quick")
    run = r.get("settings", {"clients": 4, "rounds": 2, "local_steps": 6, "batch_size": 4})
    rows = [
        "### Training speed: seconds per training sample (`benchmarks/training_speed.py"
        + ("`)" if profile == "quick" else f" --profile {profile}`)"),
        "",
        f"{m['cores']} cores {m['cpu']}, torch {m['torch']}, {m['date']}. Profile `{profile}`'s FedAvg run in `dual` "
        f"({run['clients']} clients, {run['rounds']} rounds × {run['local_steps']} steps × batch {run['batch_size']}) "
        "trained by `fedrouter train` from the tree before the speed-ups "
        f"(`{s['before']['checkout']}`) and from {after}, {len(r['runs']) // 2} times each, alternating; medians. "
        f"Load average (1 min) at the start and the end: {r['load_avg_1m'][0]:g}, {r['load_avg_1m'][1]:g} "
        "(above ~1: other work shared the 2 cores, alike for before and after). "
        "`whole run`: the command from start to release (Python's and Ray's start, the clients' query, the rounds, "
        "the releases); `rounds`: the rounds alone. " + r["changes"],
        "",
        "| | checkout | s / sample, whole run | s / sample, rounds | loss after each round | evaluation s | scores |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in s.items():
        rows.append(
            f"| {name} | {after if name == 'after' else v['checkout']} | {v['s_per_sample']:.3f} | {v['rounds_s_per_sample']:.3f} | "
            f"{', '.join(f'{x:.4f}' for x in v['loss'])} | "
            + ("not run | not run |" if v["eval_s"] is None else f"{v['eval_s']:.0f} | ")
            + ("" if v["eval_s"] is None else f"{', '.join(f'{k} {x:.3f}' for k, x in v['scores'].items())} |")
        )
    rows += [
        "",
        "Where a whole run's seconds go (medians): `start + stop`: Python, Ray and Flower starting and "
        "stopping, outside the ServerApp (since 2026-12-08 also the fresh LoRA every cluster starts from, made "
        "while Ray's head starts, and until the server stopped loading it, the release's embedder); "
        "`query + first adapters`: inside it, before "
        "the first round (the clients embed and cluster their samples; before 2026-12-08 the server made the "
        "fresh LoRA meanwhile).",
        "",
        "| | whole run s | start + stop s | query + first adapters s | rounds s |",
        "|---|---|---|---|---|",
    ]
    for name, v in s.items():
        rows.append(
            f"| {name} | {v['train_s']:.1f} | {v['start_stop_s']:.1f} | {v['query_init_s']:.1f} | {v['rounds_s']:.1f} |"
        )
    met = "met" if r["speedup_median"] >= r["goal"] else "missed"
    rounds = s["before"]["rounds_s_per_sample"] / s["after"]["rounds_s_per_sample"]
    rows += [
        "",
        f"Speed-up, whole run: {r['speedup_median']:.2f}× (paired runs: "
        f"{', '.join(f'{x:.2f}×' for x in r['speedup_paired'])}); the goal of {r['goal']:g}× is **{met}** for the "
        f"whole run. Rounds alone (the training, without starting processes, loading libraries and models, and the "
        f"query): {rounds:.2f}×, {'at or above' if rounds >= r['goal'] else 'below'} the goal."
        + (
            ""
            if s["after"]["eval_s"] is None
            else f" Evaluation (`fedrouter eval` of the run's release, every routing mode, 24 test prompts per "
            f"client and task): {s['before']['eval_s'] / s['after']['eval_s']:.2f}×."
        ),
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
