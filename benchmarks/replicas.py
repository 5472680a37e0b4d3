"""Replica choice: adapter affinity against least-loaded (round-robin among equals) on 2 vLLM replicas.

Two vLLM servers (each pinned to its own core here) serve one release of `--adapters` random LoRAs
with a small `--max-loras`: a batch holds at most that many distinct adapters, so a replica asked
for every adapter runs smaller batches. One gateway in attach mode (`--backend` x2) is restarted
per window with `--replica-policy least-loaded` or `affinity`; windows alternate (L, A, L, A, ...),
the same workload each time: `--concurrency` clients, streamed chat completions of `--max-tokens`
tokens (`ignore_eos`), each naming an adapter drawn uniformly.

    python -m benchmarks.replicas [--adapters 8 --max-loras 2 --concurrency 16 --seconds 60 --rounds 2]

On a GPU machine (vLLM with CUDA, 2 GPUs): `--pin '' --gpus 0,1`, many more adapters than
`--max-loras` (e.g. --adapters 64 --max-loras 8), --concurrency 64, longer outputs (--max-tokens 128).
Writes benchmarks/results/replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
from pathlib import Path

from benchmarks.adapters import adapter_names, many_adapter_release
from benchmarks.serving import load
from benchmarks.stack import RESULTS, machine, metric_samples
from fedrouter.serving import launch

POLICIES = ("least-loaded", "affinity")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--max-loras", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=2, help="windows per policy, alternated")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--pin", default="0,1", help="VLLM_CPU_OMP_THREADS_BIND per replica ('' for none)")
    ap.add_argument("--gpus", default="", help="CUDA_VISIBLE_DEVICES per replica, e.g. 0,1 (on a GPU machine)")
    ap.add_argument("--work", default="runs/bench/replicas")
    args = ap.parse_args()

    work = Path(args.work)
    release = many_adapter_release(work, args.adapters)
    names = adapter_names(args.adapters)
    pins = args.pin.split(",") if args.pin else []
    envs = [{"VLLM_CPU_OMP_THREADS_BIND": p, "VLLM_CPU_KVCACHE_SPACE": "1"} for p in pins] or None
    if args.gpus:
        envs = [{"CUDA_VISIBLE_DEVICES": g} for g in args.gpus.split(",")]
    vllm_args = ["--max-loras", str(args.max_loras), "--max-cpu-loras", str(args.adapters)]
    windows: dict[str, list[dict]] = {p: [] for p in POLICIES}
    with launch.vllm_servers(release, work / "logs", 2, extra_args=vllm_args, env=envs) as (urls, key):
        from fedrouter.router.release import load_release
        from fedrouter.serving.affinity import AffinityRing
        from fedrouter.serving.registry import backend_adapter_name

        digests = load_release(release).manifest.digests
        vllm_name = {n: backend_adapter_name(n, digests[n]) for n in names}  # as the gateway registers them
        ring = AffinityRing(urls)
        ring.set_keys(list(vllm_name.values()))  # as the gateway does with what the replicas serve
        homes = {n: urls.index(ring.home(vllm_name[n])) for n in names}
        for rnd in range(args.rounds):
            for policy in POLICIES:
                extra = ["--replica-policy", policy]
                with launch.gateway(
                    release,
                    work / "logs" / policy,
                    backends=urls,
                    extra=extra,
                    env={"FEDROUTER_VLLM_API_KEY": key, "FEDROUTER_ALLOW_OPEN_BACKEND": "1"},
                ) as gw:
                    model_of = _uniform(names, seed=rnd)  # the same request sequence for both policies
                    asyncio.run(load(gw.url, model_of, 2, 5, args.max_tokens))  # warm-up
                    row = asyncio.run(load(gw.url, model_of, args.concurrency, args.seconds, args.max_tokens))
                    row["placements"] = _placements(gw.url)
                windows[policy].append(row)
                print(f"round {rnd} {policy:13s} {row}", flush=True)
    tps = {p: [w["out_tok_per_s"] for w in ws] for p, ws in windows.items()}
    ratios = [a / b for a, b in zip(tps["affinity"], tps["least-loaded"])]
    result = {
        "benchmark": "replicas",
        "machine": machine(),
        "settings": {
            "replicas": 2,
            "adapters": args.adapters,
            "max_loras": args.max_loras,
            "max_cpu_loras": args.adapters,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "pinned_cores": pins,
            "adapters_per_home_replica": [sum(1 for h in homes.values() if h == i) for i in range(2)],
        },
        "windows": windows,
        "out_tok_per_s_median": {p: round(statistics.median(v), 1) for p, v in tps.items()},
        "affinity_vs_least_loaded": round(statistics.median(ratios), 3),
        "paired_ratios": [round(r, 3) for r in ratios],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replicas.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "windows")}, indent=2))


def _uniform(names: list[str], seed: int):
    rng = random.Random(seed)
    return lambda _prompt: rng.choice(names)


def _placements(url: str) -> dict[str, float]:
    import httpx

    return dict(metric_samples(httpx.get(f"{url}/metrics").text, "fedrouter_backend_requests_total"))


def render(r: dict) -> str:
    s = r["settings"]
    rows = [
        f"### Replicas: adapter affinity vs least-loaded ({_machine(r)})",
        "",
        f"2 vLLM replicas (cores {s['pinned_cores'] or 'unpinned'}), {s['adapters']} random LoRAs, `--max-loras "
        f"{s['max_loras']}` (`--max-cpu-loras {s['max_cpu_loras']}`), {s['concurrency']} clients, streamed "
        f"completions of {s['max_tokens']} tokens, {s['rounds']} alternated windows of {s['seconds']:.0f} s per "
        f"policy; adapters per home replica: {s['adapters_per_home_replica']}.",
        "",
        "| policy | out tok/s per window | median | TTFT p50 ms per window | ITL p50 ms per window |",
        "|---|---|---|---|---|",
    ]
    for policy, ws in r["windows"].items():
        rows.append(
            f"| {policy} | {', '.join(str(w['out_tok_per_s']) for w in ws)} | {r['out_tok_per_s_median'][policy]} | "
            f"{', '.join(str(w['ttft_p50_ms']) for w in ws)} | {', '.join(str(w['itl_p50_ms']) for w in ws)} |"
        )
    rows += [
        "",
        f"Affinity / least-loaded throughput (median of paired windows): **{r['affinity_vs_least_loaded']}** "
        f"(pairs: {r['paired_ratios']}; goal ≥ 1.10 where adapters outnumber slots).",
        "",
        "Reading it: on a shared 2-core machine the paired windows can disagree by more than the effect, so compare "
        "the pairs before the median. On a CPU a decode step costs about in proportion to the tokens in the batch, "
        "so the smaller batches that `--max-loras` forces on a replica asked for every adapter cost it little "
        "throughput; affinity mostly shortens the wait for a slot (TTFT). On a GPU a decode step is memory-bound and "
        "costs nearly the same for 2 or 32 sequences, which is where keeping each replica's adapters within its "
        "slots should pay. With few adapters the hash splits them unevenly (see above); the load bound "
        "spills the excess (placements per window in the JSON). To measure on a GPU (vLLM with CUDA, 2 GPUs, one "
        "replica each): `python -m benchmarks.replicas --pin '' --gpus 0,1 --adapters 64 --max-loras 8 --concurrency 64 "
        "--max-tokens 128 --seconds 120`.",
    ]
    return "\n".join(rows)


def _machine(r: dict) -> str:
    m = r["machine"]
    return f"{m['cores']} cores {m['cpu']}, vLLM {m['vllm']}, {m['date']}"


if __name__ == "__main__":
    main()
