"""Where a CPU training step's time goes, and how much of it any cut could win (issue 16's speed target).

A step of `train_steps` itself, one call per batch, as it runs on the CPU now (the batch tokenized,
frozen Linear weights held in bf16, SDPA's math kernel, bf16 autocast, answer-only logits, forward,
backward and the AdamW step), on batches of
every client of a regime's training samples at the `full` profile's batch size, under torch's
profiler. Per client: the step's milliseconds without the profiler (median); the matrix products'
(mm, bmm, addmm) own milliseconds per step under the profiler, whose overhead falls on the thousands
of small operators and hardly on these few large ones, and their share of the step; their achieved
GFLOP/s (the profiler's FLOP count over their time);
and where the tokens of the batch as padded rows go: padding (rows padded to the longest), the chat
template's default system prompt (its tokens over an empty system message; every prompt carries
it, as vLLM's chat endpoint adds it when serving), the rest of the prompt, the answer; and how many
of them the packed row a step computes now holds (`pack_batch`: the shared prefix, the system
prompt among it, once; no padding).

What it bounds: were every operator but the matrix products free, a step would take their share of
it, so 1 / share is the most any cut of the rest can win; a cut of tokens shrinks the matrix
products too, roughly in proportion. Result: results/training_ops.json.

    python -m benchmarks.training_ops            # dual, 4 batches per client, ~2 min on 2 cores
"""

from __future__ import annotations

import random
import statistics
import time

from benchmarks.stack import RESULTS

MATMUL = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"}


def system_prompt_tokens(tok) -> int:
    """Tokens the chat template's default system prompt adds to a prompt, over an empty system message."""
    from fedrouter.training.model import prompt_text

    if not tok.chat_template:
        return 0
    default = tok(prompt_text(tok, "x"), add_special_tokens=False)["input_ids"]
    turns = [{"role": "system", "content": ""}, {"role": "user", "content": "x"}]
    empty = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return max(0, len(default) - len(tok(empty, add_special_tokens=False)["input_ids"]))


def measure(regime: str, batches: int, seed: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.training_step import step_model, step_setup
    from fedrouter.training import model as M

    cfg, scenario, tok = step_setup(regime, seed, "training_ops")
    model = step_model(cfg, seed)
    system = system_prompt_tokens(tok)
    rng = random.Random(seed)
    clients = []
    for pid, client in enumerate(scenario.clients):
        drawn = [rng.sample(client.train, min(cfg.batch_size, len(client.train))) for _ in range(batches)]

        def step(samples: list[dict]) -> None:  # one step of training itself, on exactly these samples
            M.train_steps(model, tok, samples, 1, len(samples), cfg.lr, seed)

        step(drawn[0])  # warm-up: allocator, kernels' first calls
        times = []
        for samples in drawn:
            started = time.perf_counter()
            step(samples)
            times.append(time.perf_counter() - started)
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            for samples in drawn:
                step(samples)
        matmul = [e for e in prof.key_averages() if e.key in MATMUL]
        matmul_us = sum(e.self_cpu_time_total for e in matmul)
        step_ms = 1000 * statistics.median(times)
        # the matrix products' own time per step (a few large calls: the profiler's overhead, which falls
        # on the thousands of small operators, hardly touches them) over a step's time without the profiler
        matmul_ms = matmul_us / 1000 / len(drawn)
        tokens = {"padding": 0, "system": 0, "prompt": 0, "answer": 0}
        packed = sum(int(M.pack_batch(tok, samples)["input_ids"].numel()) for samples in drawn)
        for batch in (M.make_batch(tok, samples) for samples in drawn):
            real = int(batch["attention_mask"].sum())
            answer = int((batch["labels"] != M.LOSS_IGNORE).sum())
            rows = int(batch["input_ids"].shape[0])
            tokens["padding"] += batch["input_ids"].numel() - real
            tokens["system"] += system * rows
            tokens["answer"] += answer
            tokens["prompt"] += real - answer - system * rows
        clients.append(
            {
                "client": pid,
                "tasks": client.tasks,
                "step_ms": step_ms,
                "matmul_ms": matmul_ms,
                "matmul_gflops": sum(e.flops or 0 for e in matmul) / (matmul_us * 1e-6) / 1e9 if matmul_us else 0.0,
                "tokens": tokens,
                "packed_tokens": packed,  # what the packed rows of the same batches hold
            }
        )
        print(f"client {pid}: {step_ms:.0f} ms a step, matrix products {matmul_ms:.0f} ms", flush=True)
    return {
        "regime": regime,
        "batch_size": cfg.batch_size,
        "lora_r": cfg.lora_r,
        "batches": batches,
        "system_prompt_tokens": system,
        "threads": torch.get_num_threads(),
        "clients": clients,
    }


def main() -> None:
    from benchmarks.training_step import step_cli

    step_cli(__doc__, measure, "dual", 4, RESULTS / "training_ops.json")


def render(r: dict) -> str:
    m, cs = r["machine"], r["clients"]
    rows = [
        f"### Where a CPU training step's time goes (`benchmarks/training_ops.py`, `{r['regime']}`)",
        "",
        f"{m['cores']} cores {m['cpu']}, torch {m['torch']} ({r['threads']} threads), {m['date']}. SmolLM2-135M, "
        f"LoRA rank {r['lora_r']} on q_proj,v_proj, batch {r['batch_size']}: a training step as it runs now "
        f"(`train_steps` on one batch: tokenizing, the batch packed into one row, bf16-held weights, SDPA's math kernel, autocast, forward, backward and AdamW) on {r['batches']} batches "
        "of every client's training samples; step time without the profiler (median), the matrix "
        "products' (mm, bmm, addmm) own time per step from torch's profiler, as a share of that step time, and their "
        "GFLOP/s from its FLOP count (the small operators' times under the profiler are mostly its own overhead: not shown). Tokens "
        "of the same batches as padded rows, and the share of them the packed row a step computes holds: "
        f"the chat template's default system prompt adds {r['system_prompt_tokens']} tokens to every prompt "
        "(over an empty system message); vLLM's chat endpoint adds it when serving too. Load average (1 min) "
        f"at the start and the end: {r['load_avg_1m'][0]:g}, {r['load_avg_1m'][1]:g}.",
        "",
        "| client | tasks | step ms | matrix products ms | share of the step | GFLOP/s "
        "| padding | system prompt | rest of prompt | answer | packed row |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    for c in cs:
        t = c["tokens"]
        n = sum(t.values())
        rows.append(
            f"| {c['client']} | {', '.join(c['tasks'])} | {c['step_ms']:.0f} | {c['matmul_ms']:.0f} "
            f"| {pct(c['matmul_ms'] / c['step_ms'])} | {c['matmul_gflops']:.0f} | {pct(t['padding'] / n)} | {pct(t['system'] / n)} "
            f"| {pct(t['prompt'] / n)} | {pct(t['answer'] / n)} | {pct(c['packed_tokens'] / n)} |"
        )
    matmul = sum(c["matmul_ms"] for c in cs) / sum(c["step_ms"] for c in cs)
    tok = {k: sum(c["tokens"][k] for c in cs) for k in cs[0]["tokens"]}
    n = sum(tok.values())
    packed = sum(c["packed_tokens"] for c in cs) / n
    rows += [
        "",
        f"Over the clients (a round trains each once): matrix products {pct(matmul)} of a step, so removing every "
        f"other cost would make a step at most {1 / matmul:.2f}× faster. As padded rows, the system prompt would be "
        f"{pct(tok['system'] / n)} of the batches' tokens and padding {pct(tok['padding'] / n)}; the packed row a step "
        f"computes holds {pct(packed)} of them. "
        + (
            "The 2× goal would need the matrix products themselves to shrink further"
            if 1 / matmul < 2
            else "The bound leaves room for 2× from the rest alone; beyond it the matrix products must shrink"
        )
        + ": fewer tokens than the packed row (training without the system prompt would change what is "
        "trained against what vLLM serves) or faster kernels on these cores.",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
