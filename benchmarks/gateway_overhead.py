"""What the gateway adds to one short request, against calling vLLM directly.

Default models (SmolLM2-135M under vLLM, all-MiniLM-L6-v2 in the gateway), 3 LoRA adapters.
Requests are sent one at a time (concurrency 1), interleaved: vLLM direct with the adapter's
vLLM name, the gateway with the explicit adapter name, the gateway with model="auto". Each
request asks for 1 token, so generation time is as small as it gets and the difference is the
gateway's. The embedding pass alone is timed in-process for comparison.

    python -m benchmarks.gateway_overhead [--n 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.stack import PROBES, RESULTS, TASKS, bench_releases, gateway, machine


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="requests per configuration")
    ap.add_argument("--work", default="runs/bench", help="scratch folder")
    args = ap.parse_args()

    from fedrouter.router.embed import load_embedder
    from fedrouter.router.release import load_release

    work = Path(args.work) / "overhead"
    (release,) = bench_releases(work, ["v1"])
    # the gateway's embedder, as it runs there: the default backend (ONNX when exported), one thread
    embedder = load_embedder(load_release(release).manifest.embedder, backend="auto", threads=1)

    embed_ms = []
    for i in range(args.n):
        t = time.perf_counter()
        embedder.embed([PROBES[i % len(PROBES)]])
        embed_ms.append((time.perf_counter() - t) * 1000)

    with gateway(release, work / "logs") as stack:
        client = httpx.Client(timeout=120)
        configs = {
            "vllm_direct": (stack.vllm_url, lambda p, a: f"{a}@v1"),
            "gateway_explicit": (stack.url, lambda p, a: a),
            "gateway_auto": (stack.url, lambda p, a: "auto"),
        }
        lat: dict[str, list[float]] = {k: [] for k in configs}
        for i in range(args.n + 10):  # the first 10 rounds warm up and are dropped
            prompt = PROBES[i % len(PROBES)]
            adapter = list(TASKS)[i % len(TASKS)]
            for name, (url, model) in configs.items():
                body = {"model": model(prompt, adapter), "prompt": prompt, "max_tokens": 1, "temperature": 0}
                t = time.perf_counter()
                r = client.post(f"{url}/v1/completions", json=body)
                ms = (time.perf_counter() - t) * 1000
                r.raise_for_status()
                if i >= 10:
                    lat[name].append(ms)
        start_s = stack.start_s

    def summary(xs: list[float]) -> dict:
        return {"p50_ms": round(statistics.median(xs), 2), "p99_ms": round(percentile(xs, 99), 2), "n": len(xs)}

    direct = statistics.median(lat["vllm_direct"])
    result = {
        "benchmark": "gateway_overhead",
        "machine": machine(),
        "settings": {
            "base": "SmolLM2-135M-Instruct",
            "embedder": "all-MiniLM-L6-v2",
            "embedder_backend": getattr(embedder, "backend", "torch"),
            "adapters": 3,
            "max_tokens": 1,
            "concurrency": 1,
            "n": args.n,
        },
        "gateway_start_s": round(start_s, 1),
        "embedding_pass": summary(embed_ms),
        "latency": {k: summary(v) for k, v in lat.items()},
        "added_p50_ms": {
            "explicit": round(statistics.median(lat["gateway_explicit"]) - direct, 2),
            "auto": round(statistics.median(lat["gateway_auto"]) - direct, 2),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
