"""The benchmarks' own arithmetic and rendering, on made-up runs and on the committed results."""

import json

import pytest

from benchmarks import report
from benchmarks.serving import summarize, tok_per_s


def fake_run(start: float, seconds: float, requests: list[list[float]]) -> dict:
    """A timed run whose requests received tokens at the given times (seconds after `start`)."""
    results = [
        {
            "ok": True,
            "latency_ms": (ts[-1] - ts[0] + 0.1) * 1000,
            "ttft_ms": 100.0,
            "itl_ms": [(b - a) * 1000 for a, b in zip(ts, ts[1:])],
            "tokens": len(ts),
            "stamps": [start + t for t in ts],
            "end": start + ts[-1],
        }
        for ts in requests
    ]
    return {"results": results, "window": (start, start + seconds), "wall": max(r["end"] for r in results) - start + 3}


def test_throughput_counts_only_tokens_inside_the_window():
    # the window is [100, 110]: a ramp request before it, one inside, one running 4 s past its end
    run = fake_run(100.0, 10.0, [[-3, -2, -1], [1, 2, 3, 4], [6, 8, 10, 12, 14]])
    assert tok_per_s(run) == pytest.approx(7 / 10)  # 4 + 3 tokens inside, not 12 tokens over 17 s
    s = summarize([run])
    assert s["out_tok_per_s"] == 0.7 and s["req_per_s"] == pytest.approx(0.7 / 4.5, abs=1e-3)  # 4.5 tokens a request
    assert s["requests"] == 3 and s["failed"] == 0 and s["window_s"] == 10.0
    assert s["latency_p50_ms"] == pytest.approx(
        5600.0
    )  # steady requests (3.1 s, 8.1 s); with the ramp one (2.1 s): 3100


def test_rounds_pool_over_their_windows():
    a = fake_run(0.0, 5.0, [[1, 2, 3]])
    b = fake_run(50.0, 5.0, [[1, 2, 3, 4, 5]])
    assert summarize([a, b])["out_tok_per_s"] == pytest.approx(8 / 10, abs=0.05)


@pytest.mark.parametrize("name,render", report.SECTIONS)
def test_every_committed_result_renders(name, render):
    """benchmarks/README.md is generated: each committed result must still render."""
    r = report._load(name)
    if r is None:
        pytest.skip(f"{name} has no committed result in {report.RESULTS}")
    text = render(r)
    assert text.startswith("###") and "None" not in text.split("\n")[0]
    json.dumps(r)  # plain data


def test_embedder_accuracy_is_per_route_and_pooled_by_held_out_prompts():
    from benchmarks.embedders import _mean, accuracy
    from fedrouter.router.embed import HashEmbedder

    routes = {
        "math": (["add two and three", "add four and five"], ["add six and one", "add nine and two"]),
        "geo": (["capital of france", "capital of peru"], ["capital of chile", "add one and one", "add two and two"]),
    }
    per_route = accuracy(HashEmbedder(256).embed, routes)
    assert per_route == {"math": 1.0, "geo": pytest.approx(1 / 3)}
    assert _mean(per_route, routes, ["math", "geo"]) == 0.6  # 3 of 5 held-out prompts, not the mean of 1 and 1/3


def test_system_prompt_tokens_counts_only_a_default_system_prompt(tmp_path):
    """training_ops: the tokens a template's default system prompt adds, over an empty system message."""
    from transformers import AutoTokenizer

    from benchmarks.training_ops import system_prompt_tokens
    from tests.tiny import CHAT_TEMPLATE, make_tokenizer

    make_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert system_prompt_tokens(tok) == 0  # no default system prompt
    default = "the a of and system"
    tok.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + default + "<|im_end|>\n{% endif %}"
    ) + CHAT_TEMPLATE
    assert system_prompt_tokens(tok) == len(tok(default, add_special_tokens=False)["input_ids"]) > 0
