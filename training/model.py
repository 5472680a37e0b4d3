"""The base model with LoRA: load, train a few steps, generate, move LoRA tensors in and out.

Prompts are formatted with the tokenizer's chat template (as vLLM's chat endpoint will format
them when serving); the loss covers the answer tokens only; batches are padded to their longest
sequence; forward passes run under bf16 autocast, on a CUDA GPU where torch sees one (or where
`FEDROUTER_DEVICE` names the device), else on the CPU.

What makes a CPU step cheaper without changing what it computes (benchmarks/training_step.py: the
same batches of every client, before and after, with errors against float32):
- training runs attention through SDPA's math kernel on the CPU (`attention_kernel`): the same
  softmax(QK^T/sqrt(d) + mask)V as the flash kernel, whose backward is the slower of the two on
  sequences this short; its losses and gradients are about as close to a float32 reference as the
  flash kernel's (per client, either is the closer one);
- the frozen Linear weights are held in bf16 (`hold_linear_in_bf16`): autocast casts them to bf16 at
  every forward pass anyway, so every matmul sees the same values, bit for bit, without the casts
  (a read of every weight and a write of its copy per pass: the LM head's, 49k x 576 and tied to
  the embeddings, is held as a bf16 copy of its own, which saves ~7% of a step on the CPU);
- a training batch is packed into one row (`pack_batch`): the prefix its samples share (the chat
  template's system prompt and the user turn's opening, ~20 tokens) once, then each sample's own
  tokens, no padding; a mask lets each sample's tokens see the shared prefix and their own earlier
  tokens only, and position ids count as in the sample alone. Every answer token's logits are the
  same function of the same inputs as in a padded batch of separate rows (in float32 its loss and
  gradients agree to ~1e-6: tests/unit/test_training_learns.py); the shared prefix's gradient is the
  sum of what each sample sends back through it. In `dual` a packed row holds a little over half the
  tokens of the padded rows (benchmarks/training_ops.py).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

LOSS_IGNORE = -100


@lru_cache(maxsize=1)
def device() -> torch.device:
    """Where training and evaluation run: `FEDROUTER_DEVICE` (e.g. "cpu", "cuda", "cuda:1") if set,
    else the first CUDA GPU torch sees, else the CPU."""
    name = os.environ.get("FEDROUTER_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(model: torch.nn.Module):
    """bf16 autocast on the kind of device the model is on (a CUDA GPU or the CPU)."""
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


@lru_cache(maxsize=2)
def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def attention_kernel(model: torch.nn.Module):
    """SDPA's math kernel while training on the CPU (see the module's notes); elsewhere torch's choice."""
    if next(model.parameters()).device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def hold_linear_in_bf16(model: torch.nn.Module) -> torch.nn.Module:
    """Hold the frozen weights of the model's Linear layers in bf16, the dtype autocast casts them to
    at every forward pass: the same values reach every matmul, without the per-pass cast. The LM
    head gets a bf16 copy of its own: it is usually tied to the input embeddings, whose table keeps
    its dtype for the lookups (casting the 49k x 576 head of SmolLM2-135M was ~7% of a CPU training
    step, and is a read of it and a write of its copy per decoding step). LoRA layers, embeddings and
    norms keep their dtype. Call it after the adapters are attached (PEFT creates a LoRA in its base
    layer's dtype: a bf16 base would round a fresh LoRA's initial values); the model must then run
    under `autocast`, as `answer_loss` and `generate` do."""
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or "lora_" in name:
            continue
        weight = module.weight
        if weight.requires_grad or weight.dtype != torch.float32:
            continue
        if name.endswith("lm_head"):  # a new tensor: the tied embedding table keeps its float32 values
            module.weight = torch.nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
        else:
            weight.data = weight.data.to(torch.bfloat16)
    return model


def load_base(path: str, dtype: str = "float32") -> torch.nn.Module:
    """The base model with its weights in `dtype` ("float32" or "bfloat16": the prepared model is
    stored in bf16, so both hold the same values; bf16 also keeps the residual stream in bf16)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device())


def with_lora(model: torch.nn.Module, r: int, alpha: float, targets: list[str], seed: int = 0):
    """A PeftModel with one fresh adapter (B = 0: it starts as the base model)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    for p in peft_model.parameters():  # LoRA weights (and AdamW's state) in float32 whatever the base's dtype
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def lora_state(peft_model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def set_lora_state(peft_model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA tensors do not fit the model: unexpected {unexpected[:3]}")


def prompt_text(tok, prompt: str) -> str:
    if tok.chat_template:
        return tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt + "\n"


def encode(tok, sample: dict) -> tuple[list[int], list[int], int]:
    """A sample's token ids (chat-formatted prompt, answer, end of turn), its labels (the answer's ids,
    LOSS_IGNORE over the prompt) and its prompt's length."""
    p = tok(prompt_text(tok, sample["prompt"]), add_special_tokens=False)["input_ids"]
    a = tok(sample["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + a, [LOSS_IGNORE] * len(p) + a, len(p)


def make_batch(tok, samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Right-padded input ids with labels on the answer tokens (+ end of turn) only."""
    seqs, labels, _ = zip(*(encode(tok, s) for s in samples))
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), LOSS_IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(seqs, labels)):
        ids[i, : len(x)], lab[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def pack_batch(tok, samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """The batch as one row (see the module's notes): the prefix every sample starts with once, then
    each sample's remaining tokens. `attention_mask` [1, 1, L, L] (True: may attend): a prefix token
    sees the prefix up to itself, a sample's token the whole prefix and its own sample up to itself;
    `position_ids` [1, L]: each token's position in its own sample; `targets` [1, L]: the label of
    the next token of the same sample (LOSS_IGNORE where that is not an answer token).

    The shared prefix stops before every sample's last prompt token, so each sample keeps at least
    the token that predicts its first answer token (and duplicates in a batch stay separate)."""
    seqs, labels, prompt_lens = zip(*(encode(tok, s) for s in samples))
    first, limit = seqs[0], min(prompt_lens) - 1
    shared = 0
    while shared < limit and all(x[shared] == first[shared] for x in seqs):
        shared += 1
    ids, pos, tgt, seg = list(first[:shared]), list(range(shared)), [LOSS_IGNORE] * shared, [-1] * shared
    for i, (x, y) in enumerate(zip(seqs, labels)):
        ids += x[shared:]
        pos += range(shared, len(x))
        tgt += [*y[shared + 1 :], LOSS_IGNORE]
        seg += [i] * (len(x) - shared)
    segment = torch.tensor(seg)
    causal = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
    visible = (segment[:, None] == segment[None, :]) | (segment[None, :] == -1)  # own sample, or the prefix
    return {
        "input_ids": torch.tensor([ids]),
        "attention_mask": (causal & visible)[None, None],
        "position_ids": torch.tensor([pos]),
        "targets": torch.tensor([tgt]),
    }


def answer_loss(model, batch: dict[str, torch.Tensor], amp: bool = True) -> torch.Tensor:
    """Next-token loss on the answer tokens, computing vocabulary logits only there: the LM head
    over all positions of a 49k vocabulary is a fifth of a step's time on CPU otherwise. `batch`:
    `make_batch`'s padded rows or `pack_batch`'s one row. The batch moves to the model's device; the
    forward pass runs under bf16 autocast (`amp=False`: in the weights' own dtypes, for a float32
    reference)."""
    at = next(model.parameters()).device
    batch = {k: v.to(at) for k, v in batch.items()}
    if "targets" in batch:
        targets = batch["targets"]
    else:  # position t predicts token t+1; the last position predicts nothing
        labels = batch["labels"]
        targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], LOSS_IGNORE)], dim=1)
    keep = targets != LOSS_IGNORE
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(inner, "model", None), getattr(inner, "lm_head", None)
    with autocast(model) if amp else contextlib.nullcontext():
        if body is None or head is None:  # not a *ForCausalLM with .model/.lm_head: every position's logits
            logits = model(**inputs).logits[keep]
        else:
            logits = head(body(**inputs).last_hidden_state[keep])  # [answer tokens, vocab]
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


@dataclass(frozen=True)
class Trained:
    """What a call of `train_steps` did, counted while it ran (the benchmark's compute record)."""

    loss: float  # mean over its steps (NaN when it ran none)
    steps: int  # optimizer steps taken
    samples: int  # samples in the batches of those steps


def train_steps(
    model,
    tok,
    samples: list[dict],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    params: list | None = None,
    before_step: Callable[[], None] | None = None,
) -> Trained:
    """`steps` AdamW steps on batches drawn from `samples`; returns the mean loss and what it counted.

    `params`: parameters or AdamW parameter groups (default: the trainable ones); `before_step`
    is called before every step's forward pass (FLoRAL redraws its router noise there)."""
    if not samples or steps <= 0:
        return Trained(float("nan"), 0, 0)
    rng = random.Random(seed)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    order: list[dict] = []
    losses, seen = [], 0
    with attention_kernel(model):
        for _ in range(steps):
            if len(order) < batch_size:
                extra = list(samples)
                rng.shuffle(extra)
                order += extra * max(1, batch_size // len(extra) + 1)
            batch, order = order[:batch_size], order[batch_size:]
            if before_step is not None:
                before_step()
            loss = answer_loss(model, pack_batch(tok, batch))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            seen += len(batch)
    model.eval()
    return Trained(sum(losses) / len(losses), len(losses), seen)


@torch.inference_mode()
def generate(
    model,
    tok,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
    adapter_names: Sequence[str] | None = None,
) -> list[str]:
    """Greedy answers, batched with left padding. `adapter_names`: one per prompt (a PeftModel's
    mixed batch: each row through its own adapter, "__base__" for none)."""
    out: list[str] = []
    at = next(model.parameters()).device  # the prompts go where the model is, as in answer_loss
    tok.padding_side = "left"
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [prompt_text(tok, p) for p in prompts[i : i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(at)
            mixed = {} if adapter_names is None else {"adapter_names": list(adapter_names[i : i + batch_size])}
            with autocast(model):
                gen = model.generate(
                    **enc,
                    **mixed,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tok.padding_side = "right"
    return [o.strip() for o in out]
