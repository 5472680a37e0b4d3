"""The edge schema alone: strict on what the gateway reads, tolerant of what it only forwards."""

from __future__ import annotations

import pytest

from fedrouter.serving.errors import BadRequest
from fedrouter.serving.schema import MAX_JSON_DEPTH, ChatRequest, CompletionRequest, Limits, parse
from fedrouter.serving.settings import GatewaySettings

LIMITS = Limits(max_n=128, max_tokens=32768, max_logprobs=20, max_request_tokens=8 * 32768)
ASK = [{"role": "user", "content": "What is 2 plus 2?"}]


def chat(**fields) -> ChatRequest:
    return parse(ChatRequest, {"model": "auto", "messages": ASK, **fields}, LIMITS)


def refused(schema=ChatRequest, **body) -> BadRequest:
    with pytest.raises(BadRequest) as e:
        parse(schema, body, LIMITS)
    return e.value


def test_openai_nullable_fields_may_be_null():
    nulls = dict.fromkeys(["n", "stream", "temperature", "max_tokens", "stop", "top_p", "seed", "user", "logprobs"])
    req = chat(**nulls, max_completion_tokens=None, top_logprobs=None, tools=None, tool_choice=None)
    assert req.choices() == 1 and req.streaming is False and req.token_budget() is None
    req = parse(CompletionRequest, {"model": "m", "prompt": "x", **nulls, "best_of": None, "echo": None}, LIMITS)
    assert req.choices() == 1


def test_the_sdk_assistant_message_round_trips():
    """What `messages.append(resp.choices[0].message)` sends with the openai SDK."""
    back = {
        "role": "assistant",
        "content": "4",
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "reasoning_content": None,
    }
    req = chat(messages=[*ASK, back, {"role": "tool", "tool_call_id": "c1", "content": "4"}])
    assert req.messages[1].model_extra["refusal"] is None and req.route_text() == "What is 2 plus 2?"


def test_fields_only_forwarded_are_vllms_to_judge():
    extras = {
        "structured_outputs": {"choice": ["a", "b"]},
        "guided_json": {"type": "object"},
        "chat_template_kwargs": {"enable_thinking": False},
        "prompt_logprobs": 1,
        "temperature": 3.5,  # vLLM refuses it (0..2): the gateway leaves that to vLLM
        "frobnicate": [1, 2],  # unknown to vLLM too: it logs and ignores it
    }
    req = chat(**extras)
    assert req.model_extra == {k: v for k, v in extras.items() if k != "temperature"} | {"temperature": 3.5}


def test_parts_and_roles_vllm_takes():
    messages = [
        {"role": "narrator", "content": "Once"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, {"image_url": "y"}]},
        {"role": "user", "content": [{"type": "text", "text": "Capital"}, "of Peru?"]},
    ]
    assert chat(messages=messages).route_text() == "Capital\nof Peru?"
    assert chat(messages=[{"role": "system", "content": "only a system prompt"}]).route_text() == "only a system prompt"
    assert chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]).route_text() is None


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"stream": "false"}, "stream"),  # read by the gateway: no coercion
        ({"n": "2"}, "n"),
        ({"n": 0}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"model": 5}, "model"),
        ({"model": "m" * 300}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 123}]}]}, "messages[0].content[0].text"),
        ({"user": 7}, "user"),
    ],
)
def test_fields_the_gateway_reads_are_strict(fields, param):
    e = refused(**{"model": "auto", "messages": ASK, **fields})
    assert e.param == param and e.code == "invalid_value"


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"n": 129}, "n"),
        ({"max_tokens": 40000}, "max_tokens"),
        ({"n": 64, "max_tokens": 8192}, "n"),  # 524288 tokens > 262144
        ({"n": 9}, "n"),  # an absent max_tokens counts as the 32768 cap
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_caps(fields, param):
    e = refused(**{"model": "auto", "messages": ASK, **fields})
    assert e.param == param and e.code == "limit_exceeded" and e.status == 400


def test_best_of_counts_in_the_token_cap():
    ok = parse(CompletionRequest, {"model": "m", "prompt": "x", "best_of": 8, "max_tokens": 32768}, LIMITS)
    assert ok.choices() == 8
    e = refused(CompletionRequest, model="m", prompt="x", n=2, best_of=16, max_tokens=32768)
    assert e.param == "best_of" and "16 × 32768" in e.message
    assert refused(CompletionRequest, model="m", prompt="x", n=3, best_of=2).param == "best_of"


def test_fields_another_endpoint_reads_are_only_forwarded_here():
    """vLLM's chat endpoint has no `best_of` and completions no `max_completion_tokens` or
    `top_logprobs`: there they are unknown fields (vLLM ignores them), whatever their value.
    A hostile value once reached the token cap's arithmetic and made a 500."""
    for value in ("x", [1], {"a": 1}, 10**6, None):
        req = chat(best_of=value)
        assert req.choices() == 1 and req.model_extra["best_of"] == value
    for field in ("max_completion_tokens", "top_logprobs"):
        req = parse(CompletionRequest, {"model": "m", "prompt": "x", field: "x"}, LIMITS)
        assert req.choices() == 1 and req.token_budget() == 16  # not "x": vLLM's default


def test_completions_score_a_prompt_with_echo_and_no_new_tokens():
    """`echo: true, max_tokens: 0` (the log-probabilities of the prompt itself, as OpenAI's legacy
    completions did) is what vLLM answers; without echo vLLM refuses 0 itself (its own 400)."""
    body = {"model": "m", "prompt": "x", "echo": True, "max_tokens": 0, "logprobs": 1}
    assert parse(CompletionRequest, body, LIMITS).token_budget() == 0
    req = parse(CompletionRequest, {**body, "n": 128}, LIMITS)  # 128 × 0 new tokens: within any cap
    assert req.choices() == 128
    assert refused(**{"model": "auto", "messages": ASK, "max_tokens": 0}).param == "max_tokens"  # chat: vLLM refuses 0


def test_an_absent_max_tokens_on_completions_is_vllms_16():
    """vLLM (as OpenAI) generates at most 16 tokens a choice when a completion request gives no
    max_tokens or null: n=20 is 320 tokens there, not 20 × 32768 refused as over the cap."""
    for absent in ({}, {"max_tokens": None}):
        req = parse(CompletionRequest, {"model": "m", "prompt": "x", "n": 20, **absent}, LIMITS)
        assert req.token_budget() == 16
    assert refused(**{"model": "auto", "messages": ASK, "n": 20}).code == "limit_exceeded"  # chat: up to the context


def test_every_prompt_of_a_batch_counts_in_the_token_cap():
    """vLLM's completions generate n × max_tokens for each prompt of a list: 9 prompts of 32768
    tokens were 9 × the per-request cap, and a 4 MiB body holds a million one-word prompts."""
    full = {"model": "m", "max_tokens": 32768}
    assert parse(CompletionRequest, {**full, "prompt": ["x"] * 8}, LIMITS).choices() == 8
    for prompt in (["x"] * 9, [[1]] * 9, ["x"] * 100_000):
        e = refused(CompletionRequest, **full, prompt=prompt)
        assert e.code == "limit_exceeded" and e.param == "prompt", e.message
    e = refused(CompletionRequest, model="m", prompt=["x"] * 3, n=3, max_tokens=32768)
    assert "3 prompts × 3 × 32768" in e.message
    assert parse(CompletionRequest, {**full, "prompt": [1, 2, 3]}, LIMITS).choices() == 1  # one prompt of ids


def test_nesting_is_bounded_across_the_whole_body():
    deep: dict = {}
    node = deep
    for _ in range(MAX_JSON_DEPTH):
        node["a"] = {}
        node = node["a"]
    e = refused(model="m", messages=ASK, tools=[{"type": "function", "function": {"name": "f", "parameters": deep}}])
    assert "nested" in e.message
    chat(structured_outputs={"json": {"type": "object", "properties": {"a": {"type": "object"}}}})


def test_the_defaults_are_the_settings():
    s = GatewaySettings()
    assert (s.max_n, s.max_tokens, s.max_logprobs, s.max_request_tokens) == (
        LIMITS.max_n,
        LIMITS.max_tokens,
        LIMITS.max_logprobs,
        LIMITS.max_request_tokens,
    )
