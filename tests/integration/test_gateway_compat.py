"""What vLLM accepts, the gateway accepts: the same requests sent to a real vLLM (tiny Llama, LoRA
adapters) directly and through the gateway, by adapter name and as `model="auto"`, answered with
the same status class. Then the real `openai` SDK's own loops: a multi-turn chat that appends the
response message object, and a tool-call round trip."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration import test_gateway_vllm as spine
from tests.integration.test_gateway_vllm import VLLM_KEY, vllm_name

stack = spine.stack  # the same fixture (one tiny vLLM behind a supervised gateway for this module)

pytestmark = pytest.mark.integration
ASK = [{"role": "user", "content": "Compute 9 times 6."}]
SHORT = {"max_tokens": 4, "temperature": 0.0}
TOOL = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 9, "b": 6}'}}
# What the openai SDK sends back for `messages.append(resp.choices[0].message)` (every field it has)
SDK_ASSISTANT = {
    "role": "assistant",
    "content": "54",
    "refusal": None,
    "annotations": [],
    "audio": None,
    "function_call": None,
    "tool_calls": None,
    "reasoning_content": None,
}
NULLS = {
    "n": None,
    "stream": None,
    "temperature": None,
    "top_p": None,
    "stop": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "logit_bias": None,
    "seed": None,
    "user": None,
    "stream_options": None,
}

CHAT_CASES = {  # name -> chat body without `model`
    "plain": {"messages": ASK, **SHORT},
    "nullable fields": {"messages": ASK, **NULLS, "max_tokens": None, "max_completion_tokens": 4, "logprobs": None},
    "nullable tools": {"messages": ASK, **SHORT, "tools": None, "tool_choice": None, "response_format": None},
    "sdk assistant message": {
        "messages": [*ASK, SDK_ASSISTANT, {"role": "user", "content": "And 9 times 7?"}],
        **SHORT,
    },
    "tool round trip": {
        "messages": [
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None},
            {"role": "tool", "tool_call_id": "call_1", "content": "54"},
        ],
        "tools": [TOOL],
        "tool_choice": "none",  # "auto" needs vLLM's --enable-auto-tool-choice (both refuse it here)
        **SHORT,
    },
    "tool_choice auto without vLLM's tool parser": {"messages": ASK, "tools": [TOOL], **SHORT},
    "tools with tool_choice none": {"messages": ASK, "tools": [TOOL], "tool_choice": "none", **SHORT},
    "named tool_choice": {
        "messages": ASK,
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "multiply"}},
        "max_tokens": 8,
    },  # fmt: skip
    "text parts and string parts": {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Compute"}, " 9 times 6."]}],
        **SHORT,
    },  # fmt: skip
    "developer and name": {"messages": [{"role": "developer", "content": "Be brief.", "name": "ops"}, *ASK], **SHORT},
    "custom role": {"messages": [{"role": "narrator", "content": "Once upon a time"}, *ASK], **SHORT},
    "user message without content": {"messages": [{"role": "user"}, *ASK], **SHORT},
    "structured_outputs": {"messages": ASK, "structured_outputs": {"choice": ["yes", "no"]}, **SHORT},
    "guided_choice (removed in vLLM, ignored)": {"messages": ASK, "guided_choice": ["yes", "no"], **SHORT},
    "response_format json_object": {"messages": ASK, "response_format": {"type": "json_object"}, **SHORT},
    "chat_template_kwargs": {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}, **SHORT},
    "prompt_logprobs": {"messages": ASK, "prompt_logprobs": 1, **SHORT},
    "logprobs and top_logprobs": {"messages": ASK, "logprobs": True, "top_logprobs": 2, **SHORT},
    "sampling extras": {
        "messages": ASK,
        "top_k": 5,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "min_tokens": 1,
        "ignore_eos": True,
        "skip_special_tokens": False,
        "stop_token_ids": [0],
        "include_stop_str_in_output": True,
        **SHORT,
    },  # fmt: skip
    "n=2 and logit_bias": {"messages": ASK, "n": 2, "logit_bias": {"5": 5}, "max_tokens": 4, "temperature": 1.0},
    "stream with usage": {"messages": ASK, "stream": True, "stream_options": {"include_usage": True}, **SHORT},
    "add_generation_prompt, echo": {"messages": ASK, "add_generation_prompt": True, "echo": False, **SHORT},
    "priority, request_id, vllm_xargs": {
        "messages": ASK,
        "priority": 0,
        "request_id": "abc",
        "vllm_xargs": {"k": 1},
        **SHORT,
    },  # fmt: skip
    "unknown field": {"messages": ASK, "frobnicate": {"x": 1}, **SHORT},
    "best_of on chat (not a field of vLLM's chat)": {"messages": ASK, "best_of": "x", **SHORT},
    # refused by vLLM (REFUSED): the gateway may refuse them itself, but with a 4xx too
    "max_tokens negative": {"messages": ASK, "max_tokens": -1},
    "top_p out of range": {"messages": ASK, "top_p": 7, **SHORT},
    "temperature above 2": {"messages": ASK, "max_tokens": 4, "temperature": 3.5},
    # forwarded, and vLLM's own guard holds: no --trust-request-chat-template, no template from a client
    "chat_template from the request": {"messages": ASK, "chat_template": "{{ 7 * 7 }}", **SHORT},
    "messages empty": {"messages": [], **SHORT},
    "stop as a number": {"messages": ASK, "stop": 5, **SHORT},
}

COMPLETION_CASES = {  # name -> completion body without `model`
    "plain": {"prompt": "Compute 9 times 6.", **SHORT},
    "nullable fields": {
        "prompt": "Compute 9 times 6.",
        **{k: v for k, v in NULLS.items() if k != "n"},
        "max_tokens": 4,
        "logprobs": None,
        "echo": None,
        "best_of": None,
    },
    "n null (vLLM's completions refuse it)": {"prompt": "Compute 9 times 6.", "n": None, **SHORT},
    "prompt as a one-item list": {"prompt": ["Compute 9 times 6."], **SHORT},
    "echo and logprobs": {"prompt": "Compute 9 times 6.", "echo": True, "logprobs": 2, **SHORT},
    "structured_outputs": {"prompt": "Compute 9 times 6.", "structured_outputs": {"choice": ["yes", "no"]}, **SHORT},
    "prompt_logprobs": {"prompt": "Compute 9 times 6.", "prompt_logprobs": 1, **SHORT},
    "best_of": {"prompt": "Compute 9 times 6.", "best_of": 2, "n": 1, "max_tokens": 4},
    "suffix (needs a FIM model)": {"prompt": "Compute 9 times 6.", "suffix": "!", **SHORT},
    "stream": {"prompt": "Compute 9 times 6.", "stream": True, **SHORT},
    "unknown field": {"prompt": "Compute 9 times 6.", "frobnicate": 1, **SHORT},
    "max_tokens zero": {"prompt": "Compute 9 times 6.", "max_tokens": 0},
    "n=20 without max_tokens (16 tokens each)": {"prompt": "Compute 9 times 6.", "n": 20, "temperature": 1.0},
    "echo with max_tokens zero (scores the prompt)": {
        "prompt": "Compute 9 times 6.",
        "echo": True,
        "max_tokens": 0,
        "logprobs": 1,
    },
}

# What vLLM 0.32 refuses (4xx) of the above; everything else it answers 200.
REFUSED = {
    "tool_choice auto without vLLM's tool parser",
    "named tool_choice",
    "max_tokens negative",
    "top_p out of range",
    "messages empty",
    "stop as a number",
    "max_tokens zero",
    "temperature above 2",
    "chat_template from the request",
    "n null (vLLM's completions refuse it)",
    "suffix (needs a FIM model)",
}

CASES = [("/v1/chat/completions", n, b) for n, b in CHAT_CASES.items()]
CASES += [("/v1/completions", n, b) for n, b in COMPLETION_CASES.items()]


def _status(url: str, path: str, body: dict, key: str | None = None, uds: str | None = None) -> tuple[int, str]:
    """`uds`: the supervised vLLM's private socket (it has no TCP port); `url` is then a placeholder."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(transport=httpx.HTTPTransport(uds=uds) if uds else None) as c:
        r = c.post(f"{url}{path}", json=body, headers=headers, timeout=120)
    if body.get("stream") and r.status_code == 200:
        assert r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]
    return r.status_code, r.text[:300]


@pytest.mark.parametrize("path, name, body", CASES, ids=[f"{p.split('/')[2]}: {n}" for p, n, _ in CASES])
def test_the_gateway_accepts_what_vllm_accepts(stack, path, name, body):
    gateway = str(stack["gateway"].base_url).removesuffix("/v1/")
    vname = vllm_name(stack["root"] / "releases" / "v1", "math")
    direct = _status("http://vllm", path, {**body, "model": vname}, VLLM_KEY, uds=stack["vllm_socket"])
    assert direct[0] // 100 == (4 if name in REFUSED else 2), f"vLLM itself: {direct}"  # the table is true
    for model in ("math", "auto"):
        via = _status(gateway, path, {**body, "model": model})
        assert via[0] // 100 == direct[0] // 100, f"{model}: gateway {via} vs vLLM {direct}"


def test_the_sdk_multi_turn_loop_sends_its_own_message_objects_back(stack):
    """`messages.append(resp.choices[0].message)`: the SDK serialises the pydantic message with
    every field it has (refusal, annotations, audio, function_call, tool_calls...)."""
    for client, model in ((stack["gateway"], "auto"), (stack["gateway"], "math")):
        messages: list = [{"role": "user", "content": "Compute 9 times 6."}]
        for turn in range(3):
            resp = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0.0)
            assert resp.choices[0].message.role == "assistant"
            messages.append(resp.choices[0].message)  # the object itself, not a dict
            messages.append({"role": "user", "content": f"And {turn + 7} times 6?"})
        assert resp.model == "math"


def test_the_sdk_tool_loop(stack):
    """A tool round trip as an agent framework sends it: tools, the assistant's tool call (an SDK
    object), a `role: tool` answer; the same through the gateway as from vLLM direct."""
    vname = vllm_name(stack["root"] / "releases" / "v1", "math")
    call = openai.types.chat.ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None}
    )
    messages = [*ASK, call, {"role": "tool", "tool_call_id": "call_1", "content": "54"}]
    answers = {}
    for client, model in ((stack["vllm"], vname), (stack["gateway"], "math"), (stack["gateway"], "auto")):
        resp = client.chat.completions.create(
            model=model, messages=messages, tools=[TOOL], tool_choice="none", max_tokens=6, temperature=0
        )
        answers[model] = resp.choices[0].message.content
    assert answers["math"] == answers[vname] == answers["auto"]  # auto routes "Compute 9 times 6." to math
