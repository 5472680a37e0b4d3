"""Serving throughput and latency: what routing costs over calling vLLM directly.

One run, one workload, four configurations, interleaved at every concurrency level:
  (a) vLLM direct, base model            (b) vLLM direct, the right adapter per request
  (c) gateway, model="auto" (routed)     (d) gateway, explicit adapter name
"The right adapter" is the one the router picks for the prompt (computed once, offline), so (b)
and (c) generate exactly the same tokens. Requests are streamed chat completions of a fixed
length (`ignore_eos`), so TTFT and inter-token latency can be measured. Default models: SmolLM2-135M
under vLLM (CPU here), all-MiniLM-L6-v2 in the gateway, 3 LoRA adapters.

    python -m benchmarks.serving [--levels 1,2,4,8,16,32] [--seconds 20] [--max-tokens 32]

Writes benchmarks/results/serving.json and serving.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.gateway_overhead import percentile
from benchmarks.stack import RESULTS, TASKS, bench_releases, gateway, machine, vllm_name

CONFIGS = ("vllm_base", "vllm_adapter", "gateway_auto", "gateway_explicit")
WORKLOAD = [p for ps in TASKS.values() for p in ps] + [
    "What is 31 plus 11?",
    "Which city is the capital of Spain?",
    "Review: A dull, tedious film. Sentiment?",
    "Compute 12 times 3.",
    "What is the capital of Norway?",
    "Review: Wonderful acting throughout. Sentiment?",
]


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    stamps = []
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return {"ok": False, "status": r.status_code}
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                    stamps.append(time.perf_counter())
    end = time.perf_counter()
    itl = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]
    return {
        "ok": True,
        "latency_ms": (end - start) * 1000,
        "ttft_ms": ((stamps[0] if stamps else end) - start) * 1000,
        "itl_ms": itl,
        "tokens": len(stamps),
    }


async def load(url: str, model_of, concurrency: int, seconds: float, max_tokens: int) -> dict:
    """`concurrency` clients back to back for `seconds`; `model_of(prompt)` names the model."""
    results: list[dict] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency + 4)

    async def worker(i: int) -> None:
        # the key of the supervised vLLM (the gateway ignores it): direct calls need it
        key = os.environ.get("FEDROUTER_BENCH_VLLM_KEY")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as client:
            k = i
            while time.perf_counter() < deadline:
                prompt = WORKLOAD[k % len(WORKLOAD)]
                k += concurrency
                results.append(await one_request(client, url, model_of(prompt), prompt, max_tokens))

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    ok = [r for r in results if r["ok"]]
    lat = [r["latency_ms"] for r in ok]
    ttft = [r["ttft_ms"] for r in ok]
    itl = [x for r in ok for x in r["itl_ms"]]
    return {
        "requests": len(results),
        "failed": len(results) - len(ok),
        "wall_s": round(wall, 2),
        "req_per_s": round(len(ok) / wall, 3),
        "out_tok_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
        "latency_p50_ms": round(statistics.median(lat), 1),
        "latency_p99_ms": round(percentile(lat, 99), 1),
        "ttft_p50_ms": round(statistics.median(ttft), 1),
        "ttft_p99_ms": round(percentile(ttft, 99), 1),
        "itl_p50_ms": round(statistics.median(itl), 2) if itl else None,
        "itl_p99_ms": round(percentile(itl, 99), 2) if itl else None,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["settings"]["levels"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8))
    for cfg in CONFIGS:
        rows = [result["sweep"][str(c)][cfg] for c in levels]
        a1.plot(levels, [r["out_tok_per_s"] for r in rows], marker="o", label=cfg)
        a2.plot(levels, [r["latency_p99_ms"] for r in rows], marker="o", label=cfg)
        a3.plot(levels, [r["ttft_p50_ms"] for r in rows], marker="o", label=cfg)
    for ax, title in ((a1, "output tokens/s"), (a2, "latency p99 (ms)"), (a3, "TTFT p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    s = result["settings"]
    fig.suptitle(
        f"{s['base']} on vLLM ({result['machine']['cores']} CPU cores), {s['adapters']} LoRA adapters, "
        f"{s['max_tokens']} tokens/request, seconds per point: {s['seconds_per_level']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,2,4,8,16,32")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--work", default="runs/bench")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only these levels in the existing results (e.g. longer windows where few requests finish)",
    )
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    from fedrouter.router.embed import load_embedder
    from fedrouter.router.release import load_release
    from fedrouter.router.router import Router

    (release_dir,) = bench_releases(Path(args.work) / "serving", ["v1"])
    release = load_release(release_dir)
    router = Router(release, load_embedder(release.manifest.embedder))
    right = {p: r.adapter for p, r in zip(WORKLOAD, router.route_batch(WORKLOAD))}  # what "auto" will pick
    base = release.manifest.base_model.name
    del router  # the benchmark process should not hold a second embedder's threads busy

    old = (
        json.loads((RESULTS / "serving.json").read_text()) if args.merge and (RESULTS / "serving.json").exists() else {}
    )
    sweep: dict = old.get("sweep", {})
    seconds: dict = old.get("settings", {}).get("seconds_per_level", {})
    with gateway(release_dir, Path(args.work) / "serving" / "logs") as stack:
        os.environ["FEDROUTER_BENCH_VLLM_KEY"] = stack.vllm_key
        names = {a: vllm_name(release_dir, a) for a in release.manifest.adapters}
        urls = {
            "vllm_base": (stack.vllm_url, lambda p: base),
            "vllm_adapter": (stack.vllm_url, lambda p: names[right[p]]),
            "gateway_auto": (stack.url, lambda p: "auto"),
            "gateway_explicit": (stack.url, lambda p: right[p]),
        }
        for url, model_of in urls.values():  # warm-up: compile paths, load adapters
            asyncio.run(load(url, model_of, 2, 3, args.max_tokens))
        for c in levels:
            sweep[str(c)] = {}
            seconds[str(c)] = args.seconds
            for cfg, (url, model_of) in urls.items():
                sweep[str(c)][cfg] = asyncio.run(load(url, model_of, c, args.seconds, args.max_tokens))
                print(f"c={c:3d} {cfg:17s} {sweep[str(c)][cfg]}", flush=True)
    levels = sorted(int(c) for c in sweep)
    ratios = {}
    for c in levels:
        b, auto, expl = (sweep[str(c)][k] for k in ("vllm_adapter", "gateway_auto", "gateway_explicit"))
        ratios[str(c)] = {
            "auto_throughput_vs_direct_adapter": round(auto["out_tok_per_s"] / b["out_tok_per_s"], 3),
            "explicit_throughput_vs_direct_adapter": round(expl["out_tok_per_s"] / b["out_tok_per_s"], 3),
            "auto_added_latency_p50_ms": round(auto["latency_p50_ms"] - b["latency_p50_ms"], 1),
            "auto_added_latency_p99_ms": round(auto["latency_p99_ms"] - b["latency_p99_ms"], 1),
            "explicit_added_latency_p50_ms": round(expl["latency_p50_ms"] - b["latency_p50_ms"], 1),
        }
    result = {
        "benchmark": "serving",
        "machine": machine(),
        "settings": {
            "base": base,
            "adapters": len(release.manifest.adapters),
            "levels": levels,
            "seconds_per_level": seconds,
            "max_tokens": args.max_tokens,
            "stream": True,
            "ignore_eos": True,
        },
        "sweep": sweep,
        "ratios_to_direct_adapter": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "serving.png")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
