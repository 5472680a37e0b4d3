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
    out = [
        f"### Serving ({_machine(r)})",
        "",
        f"{s['base']} under vLLM, {s['adapters']} LoRA adapters, streamed chat completions of {s['max_tokens']} "
        f"tokens (`ignore_eos`), configurations interleaved at each level; seconds per level: "
        f"{s.get('seconds_per_level', s.get('seconds'))}. Ratios are to (b), vLLM "
        "direct with the right adapter. ![serving](results/serving.png)",
        "",
        "| concurrency | config | req/s | out tok/s | latency p50 / p99 ms | TTFT p50 / p99 ms | ITL p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, row in r["sweep"].items():
        for cfg, v in row.items():
            out.append(
                f"| {c} | {cfg} | {v['req_per_s']} | {v['out_tok_per_s']} | {v['latency_p50_ms']} / "
                f"{v['latency_p99_ms']} | {v['ttft_p50_ms']} / {v['ttft_p99_ms']} | {v['itl_p50_ms']} / {v['itl_p99_ms']} |"
            )
    out += [
        "",
        "| concurrency | auto / direct throughput (target ≥ 0.95) | explicit / direct | auto added p50 / p99 ms |",
        "|---|---|---|---|",
    ]
    for c, v in r["ratios_to_direct_adapter"].items():
        out.append(
            f"| {c} | {v['auto_throughput_vs_direct_adapter']} | {v['explicit_throughput_vs_direct_adapter']} | "
            f"{v['auto_added_latency_p50_ms']} / {v['auto_added_latency_p99_ms']} |"
        )
    return "\n".join(out)


def overhead(r: dict) -> str:
    lat = r["latency"]
    return "\n".join(
        [
            f"### Gateway overhead at concurrency 1{' against a stub vLLM' if 'stub' in r['settings'].get('backend', '') else ''} ({_machine(r)})",
            "",
            f"{r['settings'].get('runs', 1)} runs of {r['settings']['n']} sequential rounds (vLLM direct, gateway "
            "explicit, gateway `auto`; same prompt and adapter, order rotated), completions of 1 token; "
            "SmolLM2-135M, 3 adapters. Latencies pooled over runs.",
            "",
            "| path | p50 ms | p99 ms |",
            "|---|---|---|",
            *[f"| {k} | {v['p50_ms']} | {v['p99_ms']} |" for k, v in lat.items()],
            f"| embedding pass alone (MiniLM, in-process) | {r['embedding_pass']['p50_ms']} | {r['embedding_pass']['p99_ms']} |",
            "",
            f"Added by the gateway (median over runs of each run's p50 difference): explicit adapter "
            f"{r['added_p50_ms']['explicit']} ms (target ≤ 1 ms), `auto` {r['added_p50_ms']['auto']} ms"
            + (
                f"; per run, explicit: {r['added_p50_ms_per_run']['explicit']} ms. Median paired difference "
                f"(same round): explicit {r['added_paired_ms']['explicit']} ms, `auto` {r['added_paired_ms']['auto']} ms"
                if "added_paired_ms" in r
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
            f"{r['settings']['adapters_per_release']} adapters per release.",
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
    return "\n".join(rows)


def training(r: dict) -> str:
    name = r["benchmark"]
    md = (RESULTS / f"{name}.md").read_text() if (RESULTS / f"{name}.md").exists() else ""
    s = r["settings"]
    title = "FedRouter vs baselines" if name == "training_compare" else f"FedRouter vs baselines: {name}"
    return "\n".join(
        [
            f"### {title} ({_machine(r)})",
            "",
            f"SmolLM2-135M, rank-{s['lora_r']} LoRA on {s['lora_targets']}, {s['num_clients']} clients, `dual` partition "
            f"of {s['tasks']} ({s['train_per_task']} samples per client and task), {s['rounds']} rounds x "
            f"{s['local_steps']} steps, batch {s['batch_size']}. Exact match on {s['test_per_task']} held-out prompts per "
            "task and client. `routed`: the release's router picks the adapter (as `model=\"auto\"`); `client's own`: "
            "the client's own adapter (client-centric strategies); `oracle`: the best adapter per task. "
            f"![training](results/{name}.png)",
            "",
            md,
            f"Paper's claims: {r['paper']['interference']} under interference, {r['paper']['generalization']} on "
            "generalization.",
        ]
    )


SECTIONS = [
    ("serving", serving),
    ("gateway_overhead", overhead),
    ("gateway_overhead_stub", overhead),
    ("reload", reload),
    ("routing", routing),
    ("training_compare", training),
    ("training_interference", training),
]

HEADER = """# Benchmarks

Every number below comes from `make bench` (or the module named in each section) on this project's
reference machine, and is regenerated into this file by `python -m benchmarks.report`. Raw results:
`results/*.json`. Targets we hold ourselves to: `model="auto"` keeps ≥ 0.95x the throughput of calling
vLLM directly with the right adapter at every concurrency and adds no more than one embedding pass +
1 ms at concurrency 1; 0 failed requests across a hot reload; FedRouter beats FedAvg and
client-centric training, and routed adapters come close to oracle routing.

| module | what |
|---|---|
| `benchmarks/serving.py` | vLLM direct (base, right adapter) vs gateway (`auto`, explicit) at concurrency 1-32 |
| `benchmarks/gateway_overhead.py` | the gateway's added latency for one short request (`--stub`: against a stub that answers at once) |
| `benchmarks/reload.py` | hot reload under 8 clients: switch time, failures, in-flight latency |
| `benchmarks/routing.py` | routing accuracy, latency, index scaling, micro-batching |
| `benchmarks/training_compare.py` | FedRouter vs FedAvg, local, clustered, FLoRAL, oracle on `dual` and `generalization` |
"""


ANALYSIS = """### Reading the numbers (2-core CPU; see each section's JSON for the raw values)

- **Serving throughput.** On this machine LoRA decoding itself costs vLLM about half its throughput
  (`vllm_base` vs `vllm_adapter`), which no gateway can win back. Against the fair baseline (vLLM
  direct with the right adapter) `auto` kept 0.97 to 1.11 of the throughput at every concurrency:
  the target (≥ 0.95) is met. Ratios above 1 are noise: a 20 s window at low concurrency completes
  only 7-14 requests of ~3 s each, so levels 1 and 2 were measured again with 60 s windows
  (`python -m benchmarks.serving --levels 1,2 --seconds 60 --merge`): 1.03 and 1.02.
- **Added latency at concurrency 1.** The proxy hop (parse, forward with httpx, rewrite `model`)
  costs ~3 ms; `auto` adds ~15.5 ms, i.e. the proxy plus one embedding pass made on one thread
  (the in-process reference pass, 11 ms, runs on two). The target (one pass + 1 ms) is missed by
  ~3 ms: the remaining cost is the HTTP hop, and the next step is to cut it (orjson, no re-parse of
  non-streamed bodies).
- **Why the gateway embeds on one thread.** With torch's default 2 threads beside vLLM on the same
  2 cores, a routed request took ~500 ms longer than an explicit one whenever vLLM had just been
  busy: the embedder's OpenMP barriers wait on threads descheduled by vLLM's. One thread
  (`FEDROUTER_EMBED_THREADS=1`, the default) removed it (~15 ms).
- **Hot reload.** The swap is sub-second (registration of 3 adapters in vLLM + router build); no
  request failed; requests in flight during the swap finished on the old release with the usual
  latency; the old adapters were unloaded once drained.
- **Routing.** MiniLM centroids separate fedrouter's 18 tasks at 0.99 accuracy on held-out prompts
  (the misses: 10% of headline prompts, 8% of trivia questions). Search is microseconds
  even at 4,096 centroids; the IVF index pays only from thousands of adapters. Micro-batching
  reaches the embedder's own batched throughput under 32 concurrent requests (1.7x one pass per
  request).
- **Training.** In this regime (4 easy tasks, rank 8) every strategy lands within a few points on
  each client's own tasks (`dual`): FedRouter 0.729, FedAvg 0.719, clustered FL 0.755 (the best
  here, one seed). The paper's interference effect does not show on tasks this easy, as the design
  notes predicted. Generalization does: on tasks a client never trained on, FedRouter's routed
  adapters score 0.802 against 0.281 for local training (+185% relative), 0.198 for clustered FL
  and 0.740 for FLoRAL's mixtures. Routing picked the best adapter for 100% of prompts, so routed
  equals oracle-per-task for FedRouter. One seed, 24 prompts per task and client: differences of a
  few points are within noise.
- **Interference regime** (`training_interference`: 8 tasks over 8 clients, two each, rank-2 LoRA,
  K = 8): one shared adapter can no longer hold every task. FedRouter 0.781 vs FedAvg 0.672 on the
  clients' own tasks (+16.3% relative; the paper reports up to +6.1% against client-centric
  baselines), 0.825 vs 0.707 on tasks never trained on (+16.7%). Only FedRouter and FedAvg ran in
  this regime (the local baseline did not fit in the session; `python -m benchmarks.training_compare
  --name training_interference --strategies fedrouter,fedavg,local,clustered,floral,oracle --tasks
  add,sentiment,capital,parity,max,letters,acronym,first_letter --clients 8 --k-global 8 --lora-r 2
  --test-per-task 12` runs them all).
"""


def main() -> None:
    parts = [HEADER]
    for name, render in SECTIONS:
        r = _load(name)
        parts.append(render(r) if r else f"### {name}\n\n(not run yet on this machine)")
    parts.append(ANALYSIS)
    (HERE / "README.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
