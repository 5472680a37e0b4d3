"""Training learns: on a tiny random Llama, LoRA steps lower the answer loss and lift the exact-match
score of a trivial task (a constant answer) on prompts it never trained on from 0 to 1."""

import torch

from fedrouter.training.evaluate import score
from fedrouter.training.model import (
    answer_loss,
    generate,
    hold_linear_in_bf16,
    load_base,
    load_tokenizer,
    lora_state,
    make_batch,
    pack_batch,
    train_steps,
    with_lora,
)
from tests.tiny import make_tiny_llama

COUNTRIES = ["France", "Japan", "Canada", "Italy", "Kenya", "Brazil", "Egypt", "Peru", "Chile", "Spain", "Norway"]


def test_lora_steps_lower_the_loss_and_raise_a_trivial_tasks_score(tmp_path):
    base = str(make_tiny_llama(tmp_path / "base"))
    tok = load_tokenizer(base)
    model = with_lora(load_base(base), 8, 16, ["q_proj", "v_proj"], seed=0)
    train = [{"prompt": f"What is the capital of {c}?", "response": "yes"} for c in COUNTRIES[:8]]
    test = [f"What is the capital of {c}?" for c in COUNTRIES[8:]]

    def loss() -> float:
        with torch.no_grad():
            return float(answer_loss(model.eval(), make_batch(tok, train)))

    def exact() -> float:
        return sum(score(a, "yes", "exact") for a in generate(model, tok, test, max_new_tokens=3)) / len(test)

    loss_before, score_before = loss(), exact()
    done = train_steps(model, tok, train, steps=30, batch_size=4, lr=1e-2, seed=0)
    assert (done.steps, done.samples) == (30, 120)  # counted while training
    assert score_before == 0.0 and loss_before > 3.0
    assert loss() < 0.1 * loss_before
    assert exact() == 1.0


def test_bf16_held_weights_train_exactly_as_autocast_casting_them(tmp_path):
    """Frozen Linear weights held in bf16 (what autocast casts them to at every forward pass, as the
    clients hold them; the LM head, tied to the embeddings, as a copy of its own) give the same losses and LoRA tensors, bit for bit, as float32 weights cast by
    autocast; the LoRA itself stays float32."""
    base = str(make_tiny_llama(tmp_path / "base"))
    tok = load_tokenizer(base)
    held = hold_linear_in_bf16(with_lora(load_base(base), 4, 8, ["q_proj", "v_proj"], seed=0))
    cast = with_lora(load_base(base), 4, 8, ["q_proj", "v_proj"], seed=0)  # float32, cast at every pass
    frozen = [m.weight for n, m in held.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    assert {w.dtype for w in frozen} == {torch.bfloat16}  # the LM head too: a copy of its own
    assert held.get_input_embeddings().weight.dtype == torch.float32  # the tied table keeps its values
    assert torch.equal(held.get_input_embeddings().weight, cast.get_input_embeddings().weight)
    assert all(p.dtype == torch.float32 for p in held.parameters() if p.requires_grad)
    assert all(torch.equal(a, b) for a, b in zip(lora_state(held).values(), lora_state(cast).values()))
    train = [{"prompt": f"What is the capital of {c}?", "response": c} for c in COUNTRIES]
    runs = [train_steps(m, tok, train, steps=4, batch_size=4, lr=1e-2, seed=1) for m in (held, cast)]
    assert runs[0].loss == runs[1].loss
    assert all(torch.equal(a, b) for a, b in zip(lora_state(held).values(), lora_state(cast).values()))


def _loss_and_grads(model, batch) -> tuple[float, torch.Tensor]:
    loss = answer_loss(model, batch, amp=False)  # float32: no bf16 rounding to tell the two apart
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    model.zero_grad(set_to_none=True)
    return loss.item(), grad


def test_a_packed_batch_computes_what_padded_rows_compute(tmp_path):
    """One packed row (the shared prefix once, no padding) gives the padded batch's loss and LoRA
    gradients: samples of different lengths, a duplicate, and answers of different lengths."""
    base = str(make_tiny_llama(tmp_path / "base"))
    tok = load_tokenizer(base)
    model = with_lora(load_base(base), 4, 8, ["q_proj", "v_proj"], seed=0)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a fresh B is zero: A would get no gradient to compare
            torch.nn.init.normal_(p, std=0.1)
    samples = [
        {"prompt": "What is the capital of France?", "response": "Paris"},
        {"prompt": "What is the capital of the country whose flag is red and white?", "response": "Canada or Peru"},
        {"prompt": "What is the capital of France?", "response": "Paris"},
        {"prompt": "Name a number", "response": "7"},
    ]
    padded, packed = make_batch(tok, samples), pack_batch(tok, samples)
    assert packed["input_ids"].shape[1] < int(padded["attention_mask"].sum())  # the prefix counted once
    assert int((packed["targets"] != -100).sum()) == int((padded["labels"] != -100).sum())
    loss_padded, grad_padded = _loss_and_grads(model, padded)
    loss_packed, grad_packed = _loss_and_grads(model, packed)
    assert abs(loss_packed - loss_padded) < 1e-5
    assert float((grad_packed - grad_padded).norm() / grad_padded.norm()) < 1e-5
    # and the mask matters: a row in which every token sees all earlier ones computes something else
    leaky = {**packed, "attention_mask": torch.ones_like(packed["attention_mask"]).tril()}
    assert abs(_loss_and_grads(model, leaky)[0] - loss_padded) > 1e-3
