"""Regenerate benchmarks/README.md from the committed results (benchmarks/results/*.json)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def _load(name: str) -> dict | None:
    f = RESULTS / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def _machine(r: dict) -> str:
    m = r["machine"]
    return f"{m['cores']} cores {m['cpu']}, Python {m['python']}, torch {m['torch']}, vLLM {m['vllm']}, {m['date']}"


def serving(r: dict) -> str:
    s = r["settings"]
    static = "static" in s.get("embedder", "")
    rounds = s.get("rounds")
    out = [
        f"### Serving{', static embedder' if static else ''} ({_machine(r)})",
        "",
        f"{s['base']} under vLLM, {s['adapters']} LoRA adapters, streamed chat completions of {s['max_tokens']} "
        f"tokens (`ignore_eos`), `auto` routed with {s.get('embedder', 'all-MiniLM-L6-v2')}; configurations "
        + (
            f"interleaved in {rounds} rounds per level (order rotated)"
            if rounds
            else "interleaved at each level (one window each)"
        )
        + f"; seconds per configuration and level: {s.get('seconds_per_level', s.get('seconds'))}. "
        f"Ratios are to (b), vLLM direct with the right adapter"
        + (": the median over rounds of the same round's ratio" if rounds else "")
        + f". ![serving](results/{'serving_static' if static else 'serving'}.png)",
        "",
        "| concurrency | config | req/s (tok/s ÷ tokens per request) | out tok/s | latency p50 / p99 ms | TTFT p50 / p99 ms "
        "| ITL p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, row in r["sweep"].items():
        for cfg, v in row.items():
            out.append(
                f"| {c} | {cfg} | {v['out_tok_per_s'] / s['max_tokens']:.3f} | {v['out_tok_per_s']} | {v['latency_p50_ms']} / "
                f"{v['latency_p99_ms']} | {v['ttft_p50_ms']} / {v['ttft_p99_ms']} | {v['itl_p50_ms']} / {v['itl_p99_ms']} |"
            )
    paired = r.get("paired_rounds", {})
    out += [
        "",
        "| concurrency | auto / direct throughput (target ≥ 0.98) | per round | pooled | explicit / direct "
        "| auto added latency p50 / p99 ms | gateway CPU per `auto` request, share of the machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, v in r["ratios_to_direct_adapter"].items():
        per_round = paired.get(c, {}).get("gateway_auto_vs_direct_adapter")
        auto = r["sweep"][c]["gateway_auto"]
        cpu = (
            f"{auto['gateway_cpu_ms_per_request']} ms, {100 * auto['gateway_cpu_share']:.1f}%"
            if "gateway_cpu_share" in auto
            else "-"
        )
        out.append(
            f"| {c} | {v['auto_throughput_vs_direct_adapter']} | {', '.join(map(str, per_round)) if per_round else '-'} "
            f"| {v.get('auto_throughput_vs_direct_adapter_pooled', v['auto_throughput_vs_direct_adapter'])} "
            f"| {v['explicit_throughput_vs_direct_adapter']} "
            f"| {v['auto_added_latency_p50_ms']} / {v['auto_added_latency_p99_ms']} | {cpu} |"
        )
    return "\n".join(out)


def overhead(r: dict) -> str:
    lat = r["latency"]
    return "\n".join(
        [
            f"### Gateway overhead at concurrency 1{' against a stub vLLM' if 'stub' in r['settings'].get('backend', '') else ''}"
            f"{', static embedder' if 'static' in r['settings']['embedder'] else ''} ({_machine(r)})",
            "",
            f"{r['settings'].get('runs', 1)} runs of {r['settings']['n']} sequential rounds (vLLM direct, gateway "
            "explicit, gateway `auto`; same prompt and adapter, order rotated), completions of 1 token; "
            "SmolLM2-135M, 3 adapters. Latencies pooled over runs."
            + (f" Run: {r['settings']['notes']}." if r["settings"].get("notes") else "")
            + (
                f" Load average (1 min) before / after: {' / '.join(map(str, r['settings']['load_avg_1m']))}."
                if "load_avg_1m" in r["settings"]
                else ""
            ),
            "",
            "| path | p50 ms | p99 ms |",
            "|---|---|---|",
            *[f"| {k} | {v['p50_ms']} | {v['p99_ms']} |" for k, v in lat.items()],
            f"| embedding pass alone ({r['settings']['embedder']}, {r['settings'].get('embedder_backend', 'torch')}, "
            "in-process) | "
            f"{r['embedding_pass']['p50_ms']} | {r['embedding_pass']['p99_ms']} |",
            "",
            f"Added by the gateway (median over runs of each run's p50 difference): explicit adapter "
            f"{r['added_p50_ms']['explicit']} ms (target ≤ 1 ms), `auto` {r['added_p50_ms']['auto']} ms"
            + (
                f"; per run, explicit: {r['added_p50_ms_per_run']['explicit']} ms. Median paired difference "
                f"(same round): explicit {r['added_paired_ms']['explicit']} ms, `auto` {r['added_paired_ms']['auto']} ms"
                if "added_paired_ms" in r
                else ""
            )
            + (
                f". `auto` over explicit (median paired difference, same round; goal ≤ 1 ms): "
                f"**{r['auto_over_explicit_paired_ms']} ms** (per run: {r['auto_over_explicit_paired_ms_per_run']} ms)"
                if "auto_over_explicit_paired_ms" in r
                else ""
            )
            + f". Gateway start (vLLM included): {r['gateway_start_s']} s."
            + (
                " With vLLM on the same 2 cores, client, gateway, vLLM's API server and its engine contend for"
                " the CPU, so the extra hop costs mostly scheduling; the stub section isolates the gateway's own cost."
                if "stub" not in r["settings"].get("backend", "")
                else " The stub answers at once and takes almost no CPU: this is the gateway's own hop"
                " (uvicorn + checks + one loopback round trip), the part the gateway's code controls."
            ),
        ]
    )


def reload(r: dict) -> str:
    lat = r["latency"]
    return "\n".join(
        [
            f"### Hot reload under load ({_machine(r)})",
            "",
            f"{r['settings']['clients']} clients, routed chat completions of {r['settings']['max_tokens']} tokens, "
            f"{r['settings']['adapters_per_release']} adapters per release; v2's adapters have other weights than "
            "v1's, so the reload registers each of them in vLLM while traffic flows.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| reload request -> switched | {r['reload_request_to_switch_s']} s |",
            f"| requests / failed | {r['requests']} / **{r['failed_requests']}** |",
            f"| responses from v1 / v2 | {r['responses_by_release']['v1']} / {r['responses_by_release']['v2']} |",
            f"| sent after the switch but answered by v1 | {r['sent_after_switch_answered_by_v1']} |",
            f"| old adapters unloaded after drain | {r['old_adapters_unloaded']} |",
            *[
                f"| latency p50 / p99, {k.replace('_', ' ')} | {v['p50_ms']} / {v['p99_ms']} ms (n={v['n']}) |"
                for k, v in lat.items()
            ],
        ]
    )


def routing(r: dict) -> str:
    a, lat, emb = r["accuracy"], r["latency"], r["embedding_throughput"]
    rows = [
        f"### Routing ({_machine(r)})",
        "",
        f"{a['tasks']} tasks, one centroid each (mean of 32 prompts), 50 held-out prompts per task. "
        "![accuracy](results/routing_accuracy.png) ![map](results/routing_map.png)",
        "",
        f"- accuracy against the true task: **{a['accuracy']:.3f}** (oracle 1.0, random {a['random']:.3f})",
        f"- one route (embed + search): p50 {lat['single_p50_ms']} ms, p99 {lat['single_p99_ms']} ms; per prompt in "
        f"batches of 8 / 64: {lat['per_prompt_ms_in_batches']['8']} / {lat['per_prompt_ms_in_batches']['64']} ms",
        f"- embedding at concurrency {emb['concurrency']}: micro-batched {emb['micro_batched_prompts_per_s']} "
        f"prompts/s, one forward pass per request {emb['one_at_a_time_prompts_per_s']} prompts/s, the embedder's "
        f"own batched ceiling {emb['embedder_batched_ceiling_prompts_per_s']} prompts/s",
        "",
        "| centroids | exact, 1 query µs | exact, per query in 256 µs | IVF, 1 query µs | IVF agrees with exact |",
        "|---|---|---|---|---|",
    ]
    for s in r["index_scaling"]:
        rows.append(
            f"| {s['centroids']} | {s['exact_single_us']} | {s['exact_batch256_us_per_query']} | "
            f"{s.get('ivf_single_us', '–')} | {s.get('ivf_agrees_with_exact', '–')} |"
        )
    if "backends" in r:
        from benchmarks.embedding import render

        rows.append(render(r["backends"]))
    return "\n".join(rows)


def _module(name: str):
    """A section rendered by the benchmark's own module (`render(result)`), imported when needed."""

    def render(r: dict) -> str:
        import importlib

        return importlib.import_module(f"benchmarks.{name}").render(r)

    return render


SECTIONS = [
    ("serving", serving),
    ("serving_static", serving),
    ("vllm_bench", _module("vllm_bench")),
    ("replicas", _module("replicas")),
    ("many_adapters", _module("many_adapters")),
    ("gateway_overhead", overhead),
    ("gateway_overhead_stub", overhead),
    ("gateway_overhead_static", overhead),
    ("gateway_overhead_static_stub", overhead),
    ("ray_overhead", _module("ray_overhead")),
    ("ray_overhead_proxy", _module("ray_overhead")),
    ("ray_overhead_handle", _module("ray_overhead")),
    ("ray_overhead_tuned", _module("ray_overhead")),
    ("ray_overhead_grpc", _module("ray_overhead")),
    ("ray_throughput", _module("ray_throughput")),
    ("ray_throughput_8", _module("ray_throughput")),
    ("ray_throughput_8_floor", _module("ray_throughput")),
    ("ray_throughput_8_strict", _module("ray_throughput")),
    ("ray_throughput_strict", _module("ray_throughput")),
    ("ray_throughput_handle", _module("ray_throughput")),
    ("reload", reload),
    ("routing", routing),
    ("routing_embedders", _module("embedders")),
    ("training_speed", _module("training_speed")),
    ("training_speed_full", _module("training_speed")),
    ("training_step", _module("training_step")),
    ("training_ops", _module("training_ops")),
    ("training_threads", _module("training_threads")),
]

HEADER = """# Benchmarks

Every number below comes from `make bench` (or the module named in each section) on this project's
reference machine, and is regenerated into this file by `python -m benchmarks.report`. Raw results:
`results/*.json` and `results/training_runs.jsonl`; no number here is typed by hand. Targets we hold
ourselves to: the gateway within 1 ms of calling vLLM directly and `model="auto"` within 1 ms of
naming the adapter (concurrency 1, medians of paired runs); `auto` keeps ≥ 0.98x the throughput of
vLLM direct with the same adapters at every concurrency; 0 failed requests across a hot reload;
and a training comparison that settles FedRouter − FedAvg at matched, counted compute (95% CI
half-width ≤ 0.03), whichever its sign.

| module | what |
|---|---|
| `benchmarks/serving.py` | vLLM direct (base, right adapter) vs gateway (`auto`, explicit) at concurrency 1-32, interleaved rounds (`--embedder static`: routed with the static embedder) |
| `benchmarks/gateway_overhead.py` | the gateway's added latency for one short request (`--stub`: against a stub that answers at once; `--embedder static`: routed with the static embedder) |
| `benchmarks/reload.py` | hot reload under 8 clients: switch time, failures, in-flight latency |
| `benchmarks/routing.py` | routing accuracy, latency, index scaling, micro-batching, embedding backends (torch / ONNX / static) |
| `benchmarks/embedders.py` | MiniLM vs the static embedder: routing accuracy on the synthetic and real-text tasks, with few examples, and on real text without instructions |
| `benchmarks/vllm_bench.py` | vLLM's own `vllm bench serve` client: TTFT, TPOT, ITL, tok/s for base, adapters, `auto` |
| `benchmarks/replicas.py` | 2 vLLM replicas: adapter affinity vs least-loaded, adapters outnumbering `--max-loras` |
| `benchmarks/many_adapters.py` | a release of 64 adapters vs 4: start, reload, memory, throughput |
| `benchmarks/ray_overhead.py` | the Ray Serve path (`fedrouter serve --ray`) vs the single gateway, both against a stub: added latency, publish time |
| `benchmarks/ray_throughput.py` | 2 real (tiny) vLLM replicas: single gateway vs Ray Serve throughput at c = 4..32, home-hit share of both, CPU per request by part |
| `benchmarks/training_speed.py` | seconds per training sample and evaluation time, the tree before the speed work (before) vs this one (after), paired runs |
| `benchmarks/training_step.py` | a training step's milliseconds and its loss and gradient errors against float32, per client of a regime: weights cast by autocast and the flash kernel (before) vs held in bf16, SDPA's math kernel, and the batch packed into one row (now) |
| `benchmarks/training_threads.py` | filling a CPU's cores with training steps: one client on every core's thread vs a client per core on one thread each, at once (how `fedrouter train` runs Flower's clients on a CPU) |
| `benchmarks/training_ops.py` | where a CPU training step's time goes (matrix products, the rest) and where its tokens go (padding, the chat template's system prompt, prompt, answer; the packed row's share): the most any cut can win |
| `benchmarks/training_repro.py` | the committed training records run again on this tree (by default `full`'s FedRouter and FedAvg, seeds 0-2): each score beside the committed one, and the headline difference of each |
| `benchmarks/schedule_alignment.py` | FedRouter vs oracle: which tasks both clients train in the same rounds under round-robin, beside the per-task scores |
| `benchmarks/training_bench.py` | `make bench-train`: FedRouter vs FedAvg (rank r and K·r), clustered FL, FLoRAL, local, oracle, base model; dual, interference, generalization; seeds; routing modes; counted steps and samples per client and round |
| `scripts/device_reference.sh` | the `reference` profile (the FedRouter reference's 25 rounds × 10 steps × batch 16) on a lent GPU that reaches no registry: `scripts/device_payload.sh` stages wheels, data and models in parts of one call each; a smoke run on a tiny model, then the runs that fit a deadline |
"""


ANALYSIS = """### How to read the serving numbers

- **Serving throughput.** On a CPU, LoRA decoding itself costs vLLM a large share of its throughput
  (`vllm_base` vs `vllm_adapter`), which no gateway can win back: the fair baseline for `auto` is
  vLLM direct with the same adapters. Each window opens once every client has finished one request
  and counts the tokens that arrive inside it; the per-round column shows how far single rounds of
  the same configuration spread on this shared machine, so a ratio is read against that spread.
- **The gateway's CPU is vLLM's CPU here.** On 2 cores, the gateway's work per request (the
  embedding for `auto`, the hop, relaying every streamed token) is taken from the cores vLLM
  computes on: the last column is what that costs per `auto` request and as a share of the machine,
  which bounds the throughput `auto` can lose. On a GPU server vLLM's compute is not on those cores.
- **Added latency at concurrency 1.** The explicit path is the proxy hop alone; `auto` adds one
  embedding pass. Both are medians of paired, interleaved runs (see Gateway overhead).
- **Why the gateway embeds on one thread.** With two embedding threads beside vLLM on the same two
  cores, a routed request waited on OpenMP barriers whose threads vLLM had descheduled; one thread
  (`FEDROUTER_EMBED_THREADS=1`, the default) removes that stall.
- **Hot reload.** Switch time, failures and in-flight latency are in the Hot reload section;
  requests sent after the switch must all be answered by the new release.
"""


def main() -> None:
    parts = [HEADER]
    for name, render in SECTIONS:
        r = _load(name)
        parts.append(render(r) if r else f"### {name}\n\n(not run yet on this machine)")
    parts.append(ANALYSIS)
    from benchmarks.training_tables import markdown as training_markdown

    parts.append(training_markdown())  # rendered from results/training_runs.jsonl
    from benchmarks.training_repro import markdown as repro_markdown

    repro = repro_markdown()  # results/training_repro.jsonl beside the committed records
    if repro:
        parts.append(repro)
    alignment = _load("schedule_alignment")
    if alignment:
        parts.append(_module("schedule_alignment")(alignment))
    (HERE / "README.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
