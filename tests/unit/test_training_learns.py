"""Training learns: on a tiny random Llama, LoRA steps lower the answer loss and lift the exact-match
score of a trivial task (a constant answer) on prompts it never trained on from 0 to 1."""

import torch

from fedrouter.training.evaluate import score
from fedrouter.training.model import (
    answer_loss,
    generate,
    load_base,
    load_tokenizer,
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
