"""How a CPU's cores train Flower clients fastest: one client on every core, or one client per core.

`fedrouter train` runs Flower's clients as Ray actors; what they may use is `ray_backend`'s choice
(training/run.py). This measures the two ways of filling a CPU's cores with the same training steps:

- `one client, all threads`: one process, torch on all the cores, every step one after another;
- `a client per core`: as many processes as cores, one torch thread each, the steps split between
  them, all running at once (started together once every one has loaded its model).

The steps are `train_steps` on batches of every client's training samples (a regime, profile
`full`'s batch size), each from the same fresh LoRA, so that a step's loss does not depend on which
process ran the steps before it: the losses, and what each step changes in the LoRA, must agree
between the two ways but for the rounding a thread count may change. Per way: steps per second of wall time (the slowest process's loop, for
the processes running at once); `--pairs` alternating runs, medians, and the paired ratio.
Result: results/training_threads.json.

    python -m benchmarks.training_threads            # dual, 3 pairs, ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.stack import RESULTS, machine


def worker(regime: str, batches: int, seed: int, part: int, parts: int, threads: int, save: str) -> None:
    """One process: load the model, say `ready`, wait for a line on stdin, run its share of the steps,
    print its result as one JSON line, and save what each step changed in the LoRA to `save`."""
    import random

    import torch

    torch.set_num_threads(threads)
    from benchmarks.training_step import step_model, step_setup
    from fedrouter.training import model as M

    cfg, scenario, tok = step_setup(regime, seed, "training_threads")
    model = step_model(cfg, seed)
    fresh = M.lora_state(model)
    rng = random.Random(seed)
    drawn = [rng.sample(c.train, min(cfg.batch_size, len(c.train))) for c in scenario.clients for _ in range(batches)]
    mine = list(range(part, len(drawn), parts))

    updates = {}

    def step(i: int) -> float:
        M.set_lora_state(model, fresh)
        loss = M.train_steps(model, tok, drawn[i], 1, len(drawn[i]), cfg.lr, seed).loss
        updates[i] = torch.cat([(t - fresh[k]).flatten() for k, t in M.lora_state(model).items()])
        return loss

    step(mine[0])  # warm-up: allocator, kernels' first calls
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    losses = {i: step(i) for i in mine}
    seconds = time.perf_counter() - started
    torch.save({i: updates[i] for i in mine}, save)  # what each step changed in the LoRA, compared after
    print(json.dumps({"part": part, "steps": len(mine), "seconds": seconds, "losses": losses}), flush=True)


def run_way(processes: int, threads: int, args: argparse.Namespace, tmp: Path) -> dict:
    """`processes` workers at once, `threads` torch threads each, the steps split between them."""
    import torch

    cmd = [sys.executable, "-m", "benchmarks.training_threads", "--worker", "--regime", args.regime]
    cmd += ["--batches", str(args.batches), "--seed", str(args.seed), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [
        subprocess.Popen(
            [*cmd, "--part", str(i), "--parts", str(processes), "--save", str(tmp / f"updates-{i}.pt")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    for p in procs:  # every model loaded and warm before any step is timed
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a worker failed to start: {' '.join(cmd)}")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    steps = sum(o["steps"] for o in out)
    wall = max(o["seconds"] for o in out)
    losses = {int(i): x for o in out for i, x in o["losses"].items()}
    updates = {i: u for part in range(processes) for i, u in torch.load(tmp / f"updates-{part}.pt").items()}
    return {"processes": processes, "threads": threads, "steps": steps, "seconds": wall,
            "steps_per_s": steps / wall, "losses": [losses[i] for i in sorted(losses)],
            "updates": [updates[i] for i in sorted(updates)]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regime", default="dual")
    ap.add_argument("--batches", type=int, default=4, help="batches per client of the regime")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(RESULTS / "training_threads.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.regime, args.batches, args.seed, args.part, args.parts, args.threads, args.save)
        return
    import tempfile

    from benchmarks.training_bench import source_commit

    ways = {"one client, all threads": (1, args.cores), "a client per core": (args.cores, 1)}
    load = [round(os.getloadavg()[0], 2)]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            for name, (processes, threads) in ways.items():
                r = run_way(processes, threads, args, Path(tmp))
                runs.append({"way": name, "pair": pair, **r})
                print(f"pair {pair} {name}: {r['steps_per_s']:.2f} steps/s", flush=True)
    load.append(round(os.getloadavg()[0], 2))
    summary = {
        name: {
            "processes": ways[name][0],
            "threads": ways[name][1],
            "steps_per_s": statistics.median(r["steps_per_s"] for r in runs if r["way"] == name),
        }
        for name in ways
    }
    one, per_core = ([r for r in runs if r["way"] == name] for name in ways)
    ratios = [b["steps_per_s"] / a["steps_per_s"] for a, b in zip(one, per_core, strict=True)]
    loss_diff = max(abs(x - y) for a, b in zip(one, per_core, strict=True) for x, y in zip(a["losses"], b["losses"]))
    # what a step changed in the LoRA, one way against the other: the difference's norm over the change's
    # norm, and the share of the LoRA's numbers that changed differently
    pairs = [(x, y) for a, b in zip(one, per_core, strict=True) for x, y in zip(a["updates"], b["updates"])]
    update_diff = max(float((x - y).norm() / x.norm()) for x, y in pairs)
    update_share = max(float((x != y).float().mean()) for x, y in pairs)
    for r in runs:
        del r["updates"]
    result = {
        "regime": args.regime,
        "batches": args.batches,
        "steps": one[0]["steps"],
        "runs": runs,
        "summary": summary,
        "ratio_paired": ratios,
        "ratio_median": statistics.median(ratios),
        "max_loss_diff": loss_diff,
        "max_update_diff": update_diff,
        "max_update_share": update_share,
        "commit": source_commit(),
        "load_avg_1m": load,
        "machine": machine(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"a client per core: {result['ratio_median']:.2f}x the steps per second; wrote {args.out}")


def render(r: dict) -> str:
    m = r["machine"]
    rows = [
        "### Filling a CPU's cores with training steps (`benchmarks/training_threads.py`)",
        "",
        f"{m['cores']} cores {m['cpu']}, torch {m['torch']}, {m['date']}. SmolLM2-135M, `{r['regime']}`, profile "
        f"`full`'s batch: {r['steps']} training steps (`train_steps`, {r['batches']} batches of every client's "
        "training samples, each from the same fresh LoRA), run by one process on all the cores' threads, or split "
        "between one process per core on one thread each, all at once (as `fedrouter train` runs Flower's clients "
        f"on a CPU now: training/run.py `ray_backend`); {len(r['ratio_paired'])} alternating pairs, medians. Load "
        f"average (1 min) at the start and the end: {r['load_avg_1m'][0]:g}, {r['load_avg_1m'][1]:g}.",
        "",
        "| way | processes × threads | steps / s |",
        "|---|---|---|",
    ]
    for name, s in r["summary"].items():
        rows.append(f"| {name} | {s['processes']} × {s['threads']} | {s['steps_per_s']:.2f} |")
    rows += [
        "",
        f"A client per core: {r['ratio_median']:.2f}× the steps per second (paired: "
        f"{', '.join(f'{x:.2f}×' for x in r['ratio_paired'])}). "
        + (
            "The same steps' losses are identical, bit for bit, between the two ways"
            if r["max_loss_diff"] == 0
            else f"The same steps' losses differ by at most {r['max_loss_diff']:.1e} between the two ways"
        )
        + (
            "; so is what each step changes in the LoRA."
            if r.get("max_update_diff") == 0
            else f"; what a step changes in the LoRA differs by at most {100 * r['max_update_diff']:.1f}% of that "
            f"change's norm, in at most {100 * r['max_update_share']:.1f}% of the LoRA's numbers. The gradients' sums "
            "split differently between threads round differently, and AdamW's first step moves every number by about "
            "the lr whatever the size of its gradient, so a gradient that rounds across zero moves its number the "
            "other way. The same holds for any change of rounding (SDPA's math kernel above); over a run it shows as "
            "losses that differ in the third decimal (`training_speed`)."
            if "max_update_diff" in r
            else "."
        ),
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
