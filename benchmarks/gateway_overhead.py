"""What the gateway adds to one short request, against calling vLLM directly.

Default models (SmolLM2-135M under vLLM; the release routed with the default embedder, the static
table distilled from all-MiniLM-L6-v2, or MiniLM itself with `--embedder minilm`), 3 LoRA adapters.
Requests are sent one at a time (concurrency 1), interleaved, as paired triples: vLLM direct with
the adapter's vLLM name, the gateway with the explicit adapter name, the gateway with
model="auto", same prompt and adapter. Each request asks for 1 token, so generation time is as
small as it gets and the difference is the gateway's. `--runs` runs of `--n` triples: the added
latency is each run's p50 difference, and the result the median over runs. The embedding pass
alone is timed in-process for comparison. `auto` against explicit (the goal: within 1 ms) is the
median over runs of each run's median paired difference (same round, same prompt).

    python -m benchmarks.gateway_overhead [--n 200] [--runs 5] [--stub] [--embedder static|minilm] [--notes TEXT]

--stub puts benchmarks/stub_vllm.py (answers at once) in vLLM's place: the gateway's own hop,
without the CPU a real vLLM takes on the same 2 cores (results/gateway_overhead_stub.json).
--embedder static (the default, as in releases) routes with the static embedder distilled from
MiniLM (router/static_embed.py; results/gateway_overhead_static[_stub].json); --embedder minilm
with MiniLM itself (results/gateway_overhead[_stub].json).
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

import httpx

from benchmarks.stack import PROBES, RESULTS, TASKS, bench_releases, free_port, gateway, machine, vllm_names


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="requests per configuration and run")
    ap.add_argument("--runs", type=int, default=5, help="paired runs; the result is their median")
    ap.add_argument("--work", default="runs/bench", help="scratch folder")
    ap.add_argument("--stub", action="store_true", help="a stub answering at once instead of vLLM")
    ap.add_argument("--embedder", choices=["minilm", "static"], default="static", help="the release's embedder")
    ap.add_argument("--notes", default="", help="how it was run (e.g. a shared machine), kept in the result")
    args = ap.parse_args()
    kind = "static" if args.embedder == "static" else "sentence-transformers"
    stem = "gateway_overhead" + ("_static" if args.embedder == "static" else "") + ("_stub" if args.stub else "")

    from fedrouter.router.embed import load_embedder
    from fedrouter.router.release import load_release

    work = Path(args.work) / ("overhead" if args.embedder == "minilm" else f"overhead-{args.embedder}")
    (release,) = bench_releases(work, ["v1"], embedder_kind=kind)
    # the gateway's embedder, as it runs there: the default backend (ONNX when exported), one thread
    embedder = load_embedder(load_release(release).manifest.embedder, backend="auto", threads=1)

    embed_ms = []
    for i in range(args.n):
        t = time.perf_counter()
        embedder.embed([PROBES[i % len(PROBES)]])
        embed_ms.append((time.perf_counter() - t) * 1000)

    load_before = os.getloadavg()[0]  # the machine's other work, kept beside the result
    names = vllm_names(release)
    runs: list[dict[str, list[float]]] = []
    stub = None
    backends: list[str] = []
    if args.stub:
        port = free_port()
        stub = subprocess.Popen([sys.executable, "-m", "benchmarks.stub_vllm", str(port)])
        backends = [f"http://127.0.0.1:{port}"]
        time.sleep(3)
    # the stub answers without a key: allowed here (a loopback benchmark), refused by default
    with gateway(release, work / "logs", backends=backends, env={"FEDROUTER_ALLOW_OPEN_BACKEND": "1"}) as stack:
        # one keep-alive connection per target, as a client would hold; the key only matters to vLLM
        direct = httpx.Client(
            base_url=backends[0] if stub else stack.vllm_url,
            timeout=120,
            headers={"authorization": f"Bearer {stack.vllm_key}"},
        )
        via = httpx.Client(base_url=stack.url, timeout=120)
        configs = {
            "vllm_direct": (direct, lambda a: names[a]),
            "gateway_explicit": (via, lambda a: a),
            "gateway_auto": (via, lambda a: "auto"),
        }
        for run in range(args.runs):
            lat: dict[str, list[float]] = {k: [] for k in configs}
            for i in range(args.n + 10):  # the first 10 rounds of each run warm up and are dropped
                prompt = PROBES[i % len(PROBES)]
                adapter = list(TASKS)[i % len(TASKS)]
                order = list(configs.items())
                order = order[i % 3 :] + order[: i % 3]  # rotate who goes first: no position bias
                for name, (client, model) in order:
                    body = {"model": model(adapter), "prompt": prompt, "max_tokens": 1, "temperature": 0}
                    t = time.perf_counter()
                    r = client.post("/v1/completions", json=body)
                    ms = (time.perf_counter() - t) * 1000
                    r.raise_for_status()
                    if i >= 10:
                        lat[name].append(ms)
            runs.append(lat)
            p50 = {k: statistics.median(v) for k, v in lat.items()}
            print(f"run {run}: " + "  ".join(f"{k} p50 {v:.2f} ms" for k, v in p50.items()), flush=True)
        start_s = stack.start_s
    if stub is not None:
        stub.kill()

    def summary(xs: list[float]) -> dict:
        return {"p50_ms": round(statistics.median(xs), 2), "p99_ms": round(percentile(xs, 99), 2), "n": len(xs)}

    def added(name: str) -> list[float]:
        return [statistics.median(r[name]) - statistics.median(r["vllm_direct"]) for r in runs]

    def paired(name: str, base: str = "vllm_direct") -> list[float]:  # per run: median of (name - base), same round
        return [statistics.median(g - d for g, d in zip(r[name], r[base])) for r in runs]

    result = {
        "benchmark": "gateway_overhead",
        "machine": machine(),
        "settings": {
            "base": "SmolLM2-135M-Instruct",
            "embedder": "all-MiniLM-L6-v2" + (" (static, distilled)" if args.embedder == "static" else ""),
            "embedder_backend": getattr(embedder, "backend", "torch"),
            "adapters": 3,
            "max_tokens": 1,
            "concurrency": 1,
            "n": args.n,
            "runs": args.runs,
            "backend": "stub (benchmarks/stub_vllm.py)" if args.stub else "vLLM",
            **({"notes": args.notes} if args.notes else {}),
            "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # before, after
        },
        "gateway_start_s": round(start_s, 1),
        "embedding_pass": summary(embed_ms),
        "latency": {k: summary([x for r in runs for x in r[k]]) for k in configs},
        "added_p50_ms_per_run": {k: [round(x, 3) for x in added(f"gateway_{k}")] for k in ("explicit", "auto")},
        # median over runs of (gateway p50 - vLLM direct p50) within each run
        "added_p50_ms": {k: round(statistics.median(added(f"gateway_{k}")), 2) for k in ("explicit", "auto")},
        # median over runs of the per-run median paired difference (less noisy than a p50 difference)
        "added_paired_ms": {k: round(statistics.median(paired(f"gateway_{k}")), 2) for k in ("explicit", "auto")},
        # the goal `auto` within 1 ms of naming the adapter: per run, median paired (auto - explicit)
        "auto_over_explicit_paired_ms_per_run": [round(x, 3) for x in paired("gateway_auto", "gateway_explicit")],
        "auto_over_explicit_paired_ms": round(statistics.median(paired("gateway_auto", "gateway_explicit")), 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
