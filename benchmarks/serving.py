"""Serving throughput and latency: what routing costs over calling vLLM directly.

One run, one workload, four configurations, interleaved at every concurrency level: each level
runs `--rounds` rounds, every configuration once per round in a rotated order, so a slow minute of
this shared machine lands on all four alike. Throughput ratios are the median over rounds of the
same round's ratio (paired), beside the pooled ratio. Each window opens once every client has
finished one request (steady state) and counts the tokens that arrive inside it:
  (a) vLLM direct, base model            (b) vLLM direct, the right adapter per request
  (c) gateway, model="auto" (routed)     (d) gateway, explicit adapter name
"The right adapter" is the one the router picks for the prompt (computed once, offline), so (b)
and (c) generate exactly the same tokens. Requests are streamed chat completions of a fixed
length (`ignore_eos`), so TTFT and inter-token latency can be measured. Default models: SmolLM2-135M
under vLLM (CPU here), all-MiniLM-L6-v2 in the gateway, 3 LoRA adapters.

    python -m benchmarks.serving [--levels 1,2,4,8,16,32] [--seconds 30] [--rounds 3] [--max-tokens 32]
                                 [--embedder minilm|static]

--seconds is each configuration's time per level (split over the rounds; doubled at concurrency
1 and 2, where few requests finish). Writes benchmarks/results/serving[_static].json and .png.
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
from benchmarks.stack import RESULTS, TASKS, bench_releases, gateway, machine, vllm_names

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
        "stamps": stamps,  # when each token arrived (perf_counter): throughput counts those inside the window
        "end": end,
    }


async def load(url: str, model_of, concurrency: int, seconds: float, max_tokens: int) -> dict:
    """One timed run, summarised (throughput, latency, TTFT, ITL)."""
    return summarize([await timed_load(url, model_of, concurrency, seconds, max_tokens)])


async def timed_load(url: str, model_of, concurrency: int, seconds: float, max_tokens: int) -> dict:
    """`concurrency` clients back to back; `model_of(prompt)` names the model. The window measured
    is `seconds` long and opens once every client has finished its first request (all clients
    starting at once is not the steady state: at high concurrency one request outlasts a short
    window). The requests, the window and the wall time, pooled over rounds by `summarize`."""
    results: list[dict] = []
    window: list[float] = []  # [opens, closes], set when the last client finishes its first request
    first_done = 0
    limits = httpx.Limits(max_connections=concurrency + 4)

    async def worker(i: int) -> None:
        nonlocal first_done
        # the key of the supervised vLLM (the gateway ignores it): direct calls need it
        key = os.environ.get("FEDROUTER_BENCH_VLLM_KEY")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as client:
            k = i
            while not window or time.perf_counter() < window[1]:
                prompt = WORKLOAD[k % len(WORKLOAD)]
                results.append(await one_request(client, url, model_of(prompt), prompt, max_tokens))
                if k == i:
                    first_done += 1
                    if first_done == concurrency:
                        now = time.perf_counter()
                        window.extend((now, now + seconds))
                k += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"results": results, "window": tuple(window), "wall": time.perf_counter() - started}


def summarize(runs: list[dict]) -> dict:
    """Pool the requests of several timed runs of one configuration. Throughput counts the tokens
    that arrived inside each run's window, over the windows' length (requests per second: those
    tokens in requests' worth, as a request of several seconds rarely ends inside a window): the
    requests still running at its end would otherwise stretch a short window by up to a request
    (seconds here) while fewer than `concurrency` clients are busy. Latencies: the requests that
    ended after the window opened (the first round of requests, started all at once, is left out)."""
    results = [r for run in runs for r in run["results"]]
    seconds = sum(run["window"][1] - run["window"][0] for run in runs)
    ok = [r for run in runs for r in run["results"] if r["ok"] and r["end"] > run["window"][0]]  # steady state
    tokens = sum(_in_window(run) for run in runs)
    per_request = statistics.mean(r["tokens"] for r in ok) if ok else 1
    lat = [r["latency_ms"] for r in ok]
    ttft = [r["ttft_ms"] for r in ok]
    itl = [x for r in ok for x in r["itl_ms"]]
    return {
        "requests": len(results),
        "failed": sum(1 for r in results if not r["ok"]),
        "window_s": round(seconds, 2),
        "wall_s": round(sum(run["wall"] for run in runs), 2),
        "req_per_s": round(tokens / per_request / seconds, 3),  # request-equivalents: few finish in a short window
        "out_tok_per_s": round(tokens / seconds, 1),
        "latency_p50_ms": round(statistics.median(lat), 1),
        "latency_p99_ms": round(percentile(lat, 99), 1),
        "ttft_p50_ms": round(statistics.median(ttft), 1),
        "ttft_p99_ms": round(percentile(ttft, 99), 1),
        "itl_p50_ms": round(statistics.median(itl), 2) if itl else None,
        "itl_p99_ms": round(percentile(itl, 99), 2) if itl else None,
        **_cpu(runs),
    }


def cpu_seconds(gateway_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the gateway process and by its supervised vLLM (its process tree)."""
    import psutil

    def used(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.NoSuchProcess:
            return 0.0

    gw = psutil.Process(gateway_pid)
    return {"gateway": used(gw), "vllm": sum(used(c) for c in gw.children(recursive=True))}


def _cpu(runs: list[dict]) -> dict:
    """Where the machine's CPU went during these runs: the gateway's share per request and overall."""
    if not all("cpu" in run for run in runs):
        return {}
    gateway = sum(run["cpu"]["gateway"] for run in runs)
    vllm = sum(run["cpu"]["vllm"] for run in runs)
    wall = sum(run["wall"] for run in runs) * (os.cpu_count() or 1)
    requests = sum(len(run["results"]) for run in runs)
    return {
        "gateway_cpu_ms_per_request": round(1000 * gateway / max(requests, 1), 2),
        "gateway_cpu_share": round(gateway / wall, 4),
        "vllm_cpu_share": round(vllm / wall, 4),
    }


def _in_window(run: dict) -> int:
    start, deadline = run["window"]
    return sum(1 for r in run["results"] if r["ok"] for t in r["stamps"] if start <= t <= deadline)


def tok_per_s(run: dict) -> float:
    """Output tokens per second inside one run's window."""
    return _in_window(run) / (run["window"][1] - run["window"][0])


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
    ap.add_argument("--seconds", type=float, default=30.0, help="per configuration and level (2x at c <= 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level (paired ratios)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--embedder", choices=["minilm", "static"], default="minilm", help="the release's embedder")
    ap.add_argument("--work", default="runs/bench")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only these levels in the existing results (e.g. longer windows where few requests finish)",
    )
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    static = args.embedder == "static"
    stem = "serving" + ("_static" if static else "")
    work = Path(args.work) / ("serving" + ("-static" if static else ""))

    from fedrouter.router.embed import load_embedder
    from fedrouter.router.release import load_release
    from fedrouter.router.router import Router

    (release_dir,) = bench_releases(work, ["v1"], embedder_kind="static" if static else "sentence-transformers")
    release = load_release(release_dir)
    router = Router(release, load_embedder(release.manifest.embedder))
    right = {p: r.adapter for p, r in zip(WORKLOAD, router.route_batch(WORKLOAD))}  # what "auto" will pick
    base = release.manifest.base_model.name
    del router  # the benchmark process should not hold a second embedder's threads busy

    old = (
        json.loads((RESULTS / f"{stem}.json").read_text()) if args.merge and (RESULTS / f"{stem}.json").exists() else {}
    )
    sweep: dict = old.get("sweep", {})
    seconds: dict = old.get("settings", {}).get("seconds_per_level", {})
    paired: dict = old.get("paired_rounds", {})
    with gateway(release_dir, work / "logs") as stack:
        os.environ["FEDROUTER_BENCH_VLLM_KEY"] = stack.vllm_key
        names = vllm_names(release_dir)
        urls = {
            "vllm_base": (stack.vllm_url, lambda p: base),
            "vllm_adapter": (stack.vllm_url, lambda p: names[right[p]]),
            "gateway_auto": (stack.url, lambda p: "auto"),
            "gateway_explicit": (stack.url, lambda p: right[p]),
        }
        for url, model_of in urls.values():  # warm-up: compile paths, load adapters
            asyncio.run(load(url, model_of, 2, 3, args.max_tokens))
        for c in levels:
            total = args.seconds * (2 if c <= 2 else 1)
            runs: dict[str, list[dict]] = {cfg: [] for cfg in CONFIGS}
            for rnd in range(args.rounds):
                order = CONFIGS[rnd % len(CONFIGS) :] + CONFIGS[: rnd % len(CONFIGS)]
                for cfg in order:
                    url, model_of = urls[cfg]
                    before = cpu_seconds(stack.proc.pid)
                    run = asyncio.run(timed_load(url, model_of, c, total / args.rounds, args.max_tokens))
                    after = cpu_seconds(stack.proc.pid)
                    runs[cfg].append({**run, "cpu": {k: after[k] - before[k] for k in after}})
                    print(
                        f"c={c:3d} round {rnd + 1}/{args.rounds} {cfg:17s} {tok_per_s(runs[cfg][-1]):7.1f} tok/s",
                        flush=True,
                    )
            sweep[str(c)] = {cfg: summarize(runs[cfg]) for cfg in CONFIGS}
            seconds[str(c)] = total
            paired[str(c)] = {
                f"{cfg}_vs_direct_adapter": [
                    round(tok_per_s(a) / tok_per_s(b), 3) for a, b in zip(runs[cfg], runs["vllm_adapter"])
                ]
                for cfg in ("gateway_auto", "gateway_explicit")
            }
    levels = sorted(int(c) for c in sweep)
    ratios = {}
    for c in levels:
        b, auto, expl = (sweep[str(c)][k] for k in ("vllm_adapter", "gateway_auto", "gateway_explicit"))
        pr = paired.get(str(c), {})
        ratios[str(c)] = {
            "auto_throughput_vs_direct_adapter": _median(pr.get("gateway_auto_vs_direct_adapter"))
            or round(auto["out_tok_per_s"] / b["out_tok_per_s"], 3),
            "explicit_throughput_vs_direct_adapter": _median(pr.get("gateway_explicit_vs_direct_adapter"))
            or round(expl["out_tok_per_s"] / b["out_tok_per_s"], 3),
            "auto_throughput_vs_direct_adapter_pooled": round(auto["out_tok_per_s"] / b["out_tok_per_s"], 3),
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
            "embedder": "all-MiniLM-L6-v2" + (" (static, distilled)" if static else ""),
            "levels": levels,
            "rounds": args.rounds,
            "seconds_per_level": seconds,
            "max_tokens": args.max_tokens,
            "stream": True,
            "ignore_eos": True,
        },
        "sweep": sweep,
        "paired_rounds": paired,
        "ratios_to_direct_adapter": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / f"{stem}.png")
    print(json.dumps(ratios, indent=2))


def _median(xs: list[float] | None) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


if __name__ == "__main__":
    main()
