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
    clients hold them) give the same losses and LoRA tensors, bit for bit, as float32 weights cast by
    autocast; the LoRA itself stays float32."""
    base = str(make_tiny_llama(tmp_path / "base"))
    tok = load_tokenizer(base)
    held = hold_linear_in_bf16(with_lora(load_base(base), 4, 8, ["q_proj", "v_proj"], seed=0))
    cast = with_lora(load_base(base), 4, 8, ["q_proj", "v_proj"], seed=0)  # float32, cast at every pass
    frozen = [m.weight for n, m in held.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    assert {w.dtype for w in frozen[:-1]} == {torch.bfloat16} and frozen[-1].dtype == torch.float32  # lm_head kept
    assert all(p.dtype == torch.float32 for p in held.parameters() if p.requires_grad)
    assert all(torch.equal(a, b) for a, b in zip(lora_state(held).values(), lora_state(cast).values()))
    train = [{"prompt": f"What is the capital of {c}?", "response": c} for c in COUNTRIES]
    runs = [train_steps(m, tok, train, steps=4, batch_size=4, lr=1e-2, seed=1) for m in (held, cast)]
    assert runs[0].loss == runs[1].loss
    assert all(torch.equal(a, b) for a, b in zip(lora_state(held).values(), lora_state(cast).values()))
