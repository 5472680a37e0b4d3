"""FLoRAL's math (arXiv 2410.03497): K shared LoRA adaptors, a softmax mixture per client.

The K adaptors of rank r are held as one LoRA of rank K·r (A's stacked, B's side by side); the
client's mixture weights pi [K] scale each adaptor's r channels between A and B:

    delta(x) = sum_k pi_k * B_k A_k x * scaling = B_cat diag(pi repeated r times) A_cat x * scaling

so a client's mixture is exactly one rank-K·r LoRA with B's columns scaled (`export_mixture`),
which vLLM serves as a single adapter. The adaptors are federated (`floral_average`); the
mixture logits stay on the client. The reference's values (router lr, noise, aggregation) and
where they come from: strategies/floral.py.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict


def channel_weights(logits: torch.Tensor, r: int) -> torch.Tensor:
    """[K] logits -> [K·r] weights: softmax, each adaptor's weight repeated over its r channels."""
    return torch.softmax(logits, dim=0).repeat_interleave(r)


def attach_mixture(model: torch.nn.Module, logits: torch.Tensor, r: int, noise: torch.Tensor | None = None) -> list:
    """Scale every lora_A output by the mixture (forward hooks); returns the hook handles.

    `noise` [K] (training only) is added to the logits before the softmax; the caller redraws it."""

    def hook(_m, _i, out):
        z = logits if noise is None else logits + noise
        return out * channel_weights(z, r).to(device=out.device, dtype=out.dtype)  # logits stay on the CPU

    handles = []
    for name, module in model.named_modules():
        if name.endswith("lora_A.default"):
            handles.append(module.register_forward_hook(hook))
    if not handles:
        raise ValueError("the model has no LoRA layers to mix")
    return handles


def export_mixture(
    state: dict[str, torch.Tensor], logits: np.ndarray | torch.Tensor, r: int
) -> dict[str, torch.Tensor]:
    """A client's mixture as one plain LoRA: B's columns scaled by the channel weights."""
    w = channel_weights(torch.as_tensor(np.asarray(logits), dtype=torch.float32), r)  # [K·r]
    return {k: (v * w[None, :] if "lora_B" in k else v.clone()) for k, v in state.items()}


def floral_average(states: list[dict], mixtures: list[np.ndarray], counts: list[int], r: int) -> dict:
    """FloralAvg: adaptor k (A's rows, B's columns k·r..(k+1)·r) averaged over clients with
    weights n_c·pi_c[k] / sum_c' n_c'·pi_c'[k]; pi_c = softmax of client c's logits [K]."""
    pis = torch.stack([torch.softmax(torch.as_tensor(np.asarray(m), dtype=torch.float32), 0) for m in mixtures])
    w = torch.as_tensor(counts, dtype=torch.float32)[:, None] * pis  # [C, K]
    w = w / w.sum(0, keepdim=True).clamp_min(1e-10)
    cw = w.repeat_interleave(r, dim=1)  # [C, K·r] per channel
    out = {}
    for key in states[0]:
        stacked = torch.stack([s[key].float() for s in states])  # [C, ...]
        if "lora_A" in key:  # [C, K·r, in]
            out[key] = (stacked * cw[:, :, None]).sum(0)
        elif "lora_B" in key:  # [C, out, K·r]
            out[key] = (stacked * cw[:, None, :]).sum(0)
        else:
            n = torch.as_tensor(counts, dtype=torch.float32)
            out[key] = (stacked * (n / n.sum()).view(-1, *[1] * (stacked.dim() - 1))).sum(0)
    return out


def floral_client_round(msg: Message, context, cfg, data, model, tok, pid: int) -> Message:
    from fedrouter.training.model import lora_state, set_lora_state, train_steps
    from fedrouter.training.schedule import round_lr

    K, r = cfg.k_global, cfg.lora_r
    rnd = int(msg.content["plan"]["round"])
    lr = round_lr(cfg.lr_schedule, rnd, cfg.rounds, cfg.lr)
    set_lora_state(model, msg.content["lora/0"].to_torch_state_dict())
    start = context.state["mixture"]["logits"].numpy() if "mixture" in context.state else np.zeros(K, np.float32)
    logits = torch.nn.Parameter(torch.tensor(start, dtype=torch.float32))
    seed = cfg.seed * 1000 + rnd * 100 + pid * 10
    gen = torch.Generator().manual_seed(seed)
    noise = torch.zeros(K)
    handles = attach_mixture(model, logits, r, noise)
    try:
        lora = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": lora}, {"params": [logits], "lr": cfg.router_lr_scale * lr, "weight_decay": 0.0}]

        def redraw() -> None:  # the reference's Router.moe: logits + noise_std * U[0, 1) while training
            noise.copy_(cfg.router_noise * torch.rand(K, generator=gen))

        done = train_steps(
            model, tok, data.train, cfg.local_steps, cfg.batch_size, lr, seed, params=groups, before_step=redraw
        )
    finally:
        for h in handles:
            h.remove()
    mixture = ArrayRecord({"logits": Array(logits.detach().numpy().astype(np.float32))})
    context.state["mixture"] = mixture
    content = RecordDict(
        {
            "lora/0": ArrayRecord(lora_state(model)),
            "mixture": mixture,
            "metrics": MetricRecord(
                {
                    "n/0": len(data.train),
                    "loss/0": done.loss,
                    "counted/steps": done.steps,
                    "counted/samples": done.samples,
                }
            ),
            "info": ConfigRecord({"partition": pid}),
        }
    )
    return Message(content=content, reply_to=msg)
