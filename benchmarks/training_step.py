"""A training step's seconds and exactness, by variant, on every client of a regime (issue 16's speed work).

Each variant computes the same answer loss and its gradients (forward and backward, no optimizer
step) on the same batches, from the same LoRA:

- `cast`: float32 frozen weights, cast to bf16 by autocast at every pass; torch's choice of SDPA
  kernel (the flash kernel on the CPU): a training step before the speed work;
- `held`: the frozen Linear weights held in bf16 (`hold_linear_in_bf16`); torch's kernel;
- `held+math`: and SDPA's math kernel (`attention_kernel`);
- `packed`: and the batch packed into one row (`pack_batch`: the shared prefix once, no padding):
  a CPU training step now.

`reference` (float32, no autocast) is not timed: each variant's loss and gradient errors are taken
against it, on every batch. Per client of the regime: `--batches` batches of the profile's batch
size drawn from its training samples; each batch through every variant, in an order rotated from
batch to batch; medians. The LoRA's B is drawn at random (a fresh one is zero), so that both A and
B have gradients to compare. Result: results/training_step.json.

    python -m benchmarks.training_step --regime interference    # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.stack import RESULTS, machine

if TYPE_CHECKING:
    import torch

VARIANTS = ("cast", "held", "held+math", "packed")


def _grads(model, batch, amp: bool = True) -> tuple[float, torch.Tensor]:
    import torch

    from fedrouter.training.model import answer_loss

    loss = answer_loss(model, batch, amp=amp)  # amp=False: the float32 reference
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    model.zero_grad(set_to_none=True)
    return loss.item(), grad


def models(base: str, r: int, seed: int) -> dict:
    """The LoRA-wrapped base model three ways, the same LoRA in each: bf16-held, autocast-cast, float32."""
    import torch

    from fedrouter.training import model as M

    held = M.hold_linear_in_bf16(M.with_lora(M.load_base(base), r, 2 * r, ["q_proj", "v_proj"], seed=seed))
    torch.manual_seed(seed + 1)
    for name, p in held.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    out = {"held": held}
    for name in ("cast", "reference"):
        # float32 weights: what autocast casts at every pass (cast), or not (reference)
        m = M.with_lora(M.load_base(base), r, 2 * r, ["q_proj", "v_proj"], seed=seed)
        for p, q in zip(m.parameters(), held.parameters(), strict=True):
            if q.requires_grad:
                p.data = q.data.clone()
        out[name] = m
    for m in out.values():
        m.train()
    return out


def step_setup(regime: str, seed: int, name: str):
    """What a per-client step benchmark (this one, training_ops, training_threads) runs on: profile
    `full`'s FedAvg settings in `regime`, the regime's scenario, and the base model's tokenizer."""
    from benchmarks.training_bench import run_config
    from benchmarks.training_protocol import PROFILES
    from fedrouter.training import model as M
    from fedrouter.training.data.scenarios import scenario_from_config

    cfg = run_config(regime, "fedavg", seed, "static", PROFILES["full"], Path(f"runs/bench/{name}"))
    return cfg, scenario_from_config(cfg), M.load_tokenizer(cfg.base_model)


def step_model(cfg, seed: int):
    """The model a CPU training step runs on now: a fresh LoRA on q_proj and v_proj, the frozen
    Linear weights held in bf16."""
    from fedrouter.training import model as M

    lora = M.with_lora(M.load_base(cfg.base_model), cfg.lora_r, cfg.lora_alpha, ["q_proj", "v_proj"], seed=seed)
    return M.hold_linear_in_bf16(lora)


def measure(regime: str, batches: int, seed: int) -> dict:
    from fedrouter.training import model as M

    cfg, scenario, tok = step_setup(regime, seed, "training_step")
    ms = models(cfg.base_model, cfg.lora_r, seed)
    rng = random.Random(seed)
    clients = []
    for pid, client in enumerate(scenario.clients):
        times = {v: [] for v in VARIANTS}
        loss_err = {v: [] for v in VARIANTS}
        grad_err = {v: [] for v in VARIANTS}
        widths = []
        tokens = {"padded": 0, "packed": 0}  # tokens the model computes: padded rows, or the packed row
        for b in range(batches):
            samples = rng.sample(client.train, min(cfg.batch_size, len(client.train)))
            batch, packed = M.make_batch(tok, samples), M.pack_batch(tok, samples)
            widths.append(int(batch["input_ids"].shape[1]))
            tokens["padded"] += batch["input_ids"].numel()
            tokens["packed"] += packed["input_ids"].numel()
            ref_loss, ref_grad = _grads(ms["reference"], batch, amp=False)
            order = VARIANTS[b % len(VARIANTS) :] + VARIANTS[: b % len(VARIANTS)]
            for v in order:
                model = ms["cast"] if v == "cast" else ms["held"]
                ctx = M.attention_kernel(model) if v in ("held+math", "packed") else contextlib.nullcontext()
                started = time.perf_counter()
                with ctx:
                    loss, grad = _grads(model, packed if v == "packed" else batch)
                times[v].append(time.perf_counter() - started)
                loss_err[v].append(abs(loss - ref_loss))
                grad_err[v].append(float((grad - ref_grad).norm() / ref_grad.norm()))
            print(
                f"client {pid} batch {b}: width {widths[-1]}, "
                + ", ".join(f"{v} {times[v][-1] * 1000:.0f} ms" for v in VARIANTS),
                flush=True,
            )
        clients.append(
            {
                "client": pid,
                "tasks": client.tasks,
                "width_median": statistics.median(widths),
                "tokens": tokens,
                "ms": {v: 1000 * statistics.median(times[v]) for v in VARIANTS},
                "loss_err": {v: statistics.median(loss_err[v]) for v in VARIANTS},
                "grad_err": {v: statistics.median(grad_err[v]) for v in VARIANTS},
                "times": {v: [round(1000 * t, 1) for t in times[v]] for v in VARIANTS},
            }
        )
    return {
        "regime": regime,
        "batch_size": cfg.batch_size,
        "lora_r": cfg.lora_r,
        "batches": batches,
        "clients": clients,
    }


def step_cli(doc: str, measure, regime: str, batches: int, out: Path) -> None:
    """The command line of a per-client step benchmark (this one, training_ops): `measure(regime,
    batches, seed)`'s result with the commit, the machine and its load average, written to `out`."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regime", default=regime, help="dual or interference")
    ap.add_argument("--batches", type=int, default=batches, help="batches per client")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(out))
    args = ap.parse_args()
    from benchmarks.training_bench import source_commit

    load = [round(os.getloadavg()[0], 2)]
    result = measure(args.regime, args.batches, args.seed)
    load.append(round(os.getloadavg()[0], 2))
    result.update({"commit": source_commit(), "load_avg_1m": load, "machine": machine()})
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def main() -> None:
    step_cli(__doc__, measure, "interference", 6, RESULTS / "training_step.json")


def render(r: dict) -> str:
    m = r["machine"]
    cs = r["clients"]
    rows = [
        f"### A training step by variant (`benchmarks/training_step.py`, `{r['regime']}`)",
        "",
        f"{m['cores']} cores {m['cpu']}, torch {m['torch']}, {m['date']}. SmolLM2-135M, LoRA rank {r['lora_r']} on "
        f"q_proj,v_proj, batch {r['batch_size']}: forward and backward of the answer loss (no optimizer step) on "
        f"{r['batches']} batches of every client's training samples, each batch through every variant in a rotated "
        "order; medians. `cast`: float32 frozen weights cast by autocast at every pass, torch's SDPA kernel (flash): "
        "a step before the speed work; `held`: frozen Linear weights held in bf16; `held+math`: and SDPA's math "
        "kernel; `packed`: and the batch packed into one row (the prefix its samples share once, no padding), a CPU "
        "step now. Errors against float32 without autocast on the same padded batch: |loss − reference| and "
        "‖grad − reference‖ / ‖reference‖. Load average (1 min) at the start and the end: "
        f"{r['load_avg_1m'][0]:g}, {r['load_avg_1m'][1]:g}.",
        "",
        "| client | tasks | median width | packed / padded tokens | cast ms | held ms | held+math ms | packed ms "
        "| cast / packed | loss error cast / packed | gradient error cast / packed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cs:
        ms, le, ge, t = c["ms"], c["loss_err"], c["grad_err"], c["tokens"]
        rows.append(
            f"| {c['client']} | {', '.join(c['tasks'])} | {c['width_median']:g} | {100 * t['packed'] / t['padded']:.0f}% "
            f"| {ms['cast']:.0f} | {ms['held']:.0f} | {ms['held+math']:.0f} | {ms['packed']:.0f} "
            f"| {ms['cast'] / ms['packed']:.2f}× | {le['cast']:.3f} / {le['packed']:.3f} | "
            f"{ge['cast']:.3f} / {ge['packed']:.3f} |"
        )
    total = {v: sum(c["ms"][v] for c in cs) for v in VARIANTS}
    rows += [
        "",
        f"Summed over clients (a round trains each once): cast {total['cast']:.0f} ms, held {total['held']:.0f} ms, "
        f"held+math {total['held+math']:.0f} ms, packed {total['packed']:.0f} ms: {total['cast'] / total['packed']:.2f}× "
        f"a step ({total['cast'] / total['held']:.2f}× from the held weights, "
        f"{total['held+math'] / total['packed']:.2f}× from packing).",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
