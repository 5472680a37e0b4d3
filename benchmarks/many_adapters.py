"""Many adapters: a release of 64 adapters against a release of 4, on the supervised stack.

For each size: gateway start (`fedrouter serve` to a healthy /health, vLLM's start included), a hot
reload to a second release of the same size (other weights, so other content-derived names: every
adapter is validated, hashed and registered in vLLM at run time; the benchmark refuses releases that
share adapters), memory (resident set of the gateway and of vLLM's process tree), and throughput:
`--concurrency` clients, streamed chat completions of `--max-tokens` tokens naming an adapter drawn
uniformly, for `--seconds`. Random LoRAs (benchmarks/adapters.py) on SmolLM2-135M.

    python -m benchmarks.many_adapters [--sizes 4,64] [--seconds 30] [--concurrency 8]

Writes benchmarks/results/many_adapters.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import httpx

from benchmarks.adapters import adapter_names, many_adapter_release
from benchmarks.serving import load
from benchmarks.stack import RESULTS, machine, vllm_names
from fedrouter.serving import launch

TOKEN = "bench-token"


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory of a process and of its descendants (vLLM's engine runs in children)."""
    import psutil

    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    children = sum(c.memory_info().rss for c in proc.children(recursive=True) if c.is_running())
    return {"gateway_mib": round(own / 2**20, 1), "vllm_tree_mib": round(children / 2**20, 1)}


def measure(n: int, a, work: Path) -> dict:
    v1 = many_adapter_release(work, n, "v1")
    v2 = many_adapter_release(work, n, "v2")
    shared = set(vllm_names(v1).values()) & set(vllm_names(v2).values())
    if shared:  # a release cached by an older version of this benchmark: the reload would register nothing
        raise SystemExit(f"{v2} shares adapters with {v1} ({len(shared)}); delete {v2.parent} and run again")
    names = adapter_names(n)
    with launch.gateway(v1, work / "logs" / str(n), env={"FEDROUTER_ADMIN_TOKEN": TOKEN}) as gw:
        memory = rss_mib(gw.proc.pid)
        rng = random.Random(0)
        asyncio.run(load(gw.url, lambda p: rng.choice(names), 2, 5, a.max_tokens))  # warm-up
        served = asyncio.run(load(gw.url, lambda p: rng.choice(names), a.concurrency, a.seconds, a.max_tokens))
        asked = time.monotonic()
        r = httpx.post(
            f"{gw.url}/admin/reload",
            json={"release": str(v2.resolve())},
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=600,
        )
        reload_s = time.monotonic() - asked
        r.raise_for_status()
        memory_after_reload = rss_mib(gw.proc.pid)
    return {
        "adapters": n,
        "gateway_start_s": round(gw.start_s, 1),
        "reload_s": round(reload_s, 2),
        "reload_switch_s_reported": r.json().get("switch_s"),
        "release_mib": round(sum(f.stat().st_size for f in (v2 / "adapters").rglob("*") if f.is_file()) / 2**20, 1),
        "memory": memory,
        "memory_after_reload": memory_after_reload,
        "throughput": served,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4,64")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--work", default="runs/bench/many_adapters")
    a = ap.parse_args()
    rows = [measure(int(n), a, Path(a.work)) for n in a.sizes.split(",")]
    for row in rows:
        print(json.dumps(row), flush=True)
    small = rows[0]
    result = {
        "benchmark": "many_adapters",
        "machine": machine(),
        "settings": {
            "sizes": [r["adapters"] for r in rows],
            "seconds": a.seconds,
            "concurrency": a.concurrency,
            "max_tokens": a.max_tokens,
            "max_loras": "2 x adapters (supervisor default: room for two releases)",
        },
        "rows": rows,
        "vs_smallest": {
            str(r["adapters"]): {
                "start": round(r["gateway_start_s"] / small["gateway_start_s"], 2),
                "reload": round(r["reload_s"] / small["reload_s"], 2),
                "throughput": round(r["throughput"]["out_tok_per_s"] / small["throughput"]["out_tok_per_s"], 3),
            }
            for r in rows
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "many_adapters.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["vs_smallest"], indent=2))


def _mib(row: dict) -> str:
    return f"{row['release_mib']:.0f}" if "release_mib" in row else "?"


def render(r: dict) -> str:
    s, m = r["settings"], r["machine"]
    out = [
        f"### Many adapters ({m['cores']} cores {m['cpu']}, vLLM {m['vllm']}, {m['date']})",
        "",
        f"Supervised stack (`fedrouter serve`), random LoRAs on SmolLM2-135M, `--max-loras` = {s['max_loras']}; "
        f"throughput: {s['concurrency']} clients, streamed completions of {s['max_tokens']} tokens on a uniformly "
        f"drawn adapter, {s['seconds']:.0f} s. Goal: start and reload within 2x of the smallest release.",
        "",
        "| adapters | start s | reload s | gateway / vLLM RSS MiB | out tok/s | TTFT p50 ms | vs smallest: start, reload, "
        "throughput |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        v = r["vs_smallest"][str(row["adapters"])]
        out.append(
            f"| {row['adapters']} | {row['gateway_start_s']} | {row['reload_s']} | {row['memory']['gateway_mib']} / "
            f"{row['memory']['vllm_tree_mib']} | {row['throughput']['out_tok_per_s']} | {row['throughput']['ttft_p50_ms']} "
            f"| {v['start']}x, {v['reload']}x, {v['throughput']}x |"
        )
    big = r["rows"][-1]
    small = r["rows"][0]

    def parts(row: dict) -> str:
        switch = row["reload_switch_s_reported"]
        return (
            f"{row['adapters']} adapters: {row['reload_s']} s = validation {row['reload_s'] - switch:.2f} s + registration "
            f"and router {switch:.2f} s ({1000 * switch / row['adapters']:.1f} ms per adapter)"
        )

    out += [
        "",
        f"Reading it: start is vLLM's own start plus the registration of every adapter through vLLM's API, so it "
        f"barely grows. A reload validates the new release (every adapter's safetensors header and sha256: "
        f"{_mib(big)} MiB for {big['adapters']} adapters), then registers each adapter in vLLM before the swap, up "
        f"to `FEDROUTER_REGISTER_CONCURRENCY` (8) calls at a time per replica: {parts(small)}; {parts(big)}. Both "
        "parts grow with the adapter count: vLLM loads adapters one after another inside its engine, whatever "
        "the concurrency of the calls, so the ratio to a small release stays far above 2x. Lazy registration "
        "(swap first, load each adapter on its first request) would shorten the reload call but not the time "
        "until the new weights serve, would move the wait onto users' first requests, and would find a "
        "refused adapter only after the swap; the gateway keeps registration before the swap.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
