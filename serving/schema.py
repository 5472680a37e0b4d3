"""The request schema of the two generation endpoints, checked once at the edge (as vLLM's protocol.py).

Strict pydantic models: no coercion (`stream: "false"` and `n: "2"` are refused), JSON only
(numbers are finite: the JSON parser refuses NaN, Infinity and numbers that overflow a double),
and bounded: `n`, `best_of`, `max_tokens` and `logprobs` are capped by `Limits` (GatewaySettings).

Unknown-field policy: a field that is neither OpenAI's nor one of the vLLM sampling extras below is
refused (400, `param` names it), on every path (auto, adapter, base model), so what reaches vLLM
is exactly what was checked here. The body is forwarded as the client sent it, `model` rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedrouter.serving.errors import BadRequest

MAX_JSON_DEPTH = 32  # inside free-form objects (tool parameters, JSON schemas)


def _bounded_depth(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _bounded_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _bounded_depth(v, depth + 1)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_depth)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
Name = Annotated[str, Field(max_length=256)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(Strict):
    name: Name
    arguments: str


class ToolCall(Strict):
    id: Name
    type: Literal["function"]
    function: FunctionCall


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: Name | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: Name | None = None

    @model_validator(mode="after")
    def _content_needed(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"'content' is required in {self.role!r} messages")
        return self


class FunctionDef(Strict):
    name: Name
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: Name


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Strict):
    name: Name
    description: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class Sampling(Strict):
    """Fields shared by both endpoints: OpenAI's, then vLLM's sampling extras."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    n: Annotated[int, Field(ge=1)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: Int64 | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Name | None = None
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=1024)] | None = None
    # vLLM extras
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=1024)] | None = None


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None

    def route_text(self) -> str | None:
        """The last user message's text (its text parts joined): what model="auto" routes on."""
        for m in reversed(self.messages):
            if m.role != "user":
                continue
            if isinstance(m.content, str):
                return m.content
            parts = [p.text for p in m.content or () if isinstance(p, TextPart)]
            return "\n".join(parts) if parts else None
        return None


Prompt = (
    str
    | Annotated[list[str], Field(min_length=1)]
    | Annotated[list[TokenId], Field(min_length=1)]
    | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
)


class CompletionRequest(Sampling):
    prompt: Prompt
    suffix: str | None = None
    echo: bool | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None
    logprobs: Annotated[int, Field(ge=0)] | None = None

    def route_text(self) -> str | None:
        """The prompt when it is text (token ids cannot be routed)."""
        if isinstance(self.prompt, str):
            return self.prompt
        if isinstance(self.prompt[0], str):
            if len(self.prompt) > 1:
                raise BadRequest("model='auto' routes one prompt per request; send the prompts separately", "prompt")
            return self.prompt[0]
        return None


@dataclass(frozen=True)
class Limits:
    max_n: int = 128
    max_tokens: int = 32768
    max_logprobs: int = 20


def parse(model: type[Sampling], body: dict[str, Any], limits: Limits) -> Sampling:
    """The typed request, or BadRequest naming the first field that is wrong."""
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        param = _param(first.get("loc", ()))
        msg = first.get("msg", "invalid value")
        if first.get("type") == "extra_forbidden":
            msg = "unknown field (see the gateway's unknown-field policy: OpenAI fields and vLLM sampling extras)"
        raise BadRequest(f"{param or 'request'}: {msg}"[:500], param, "invalid_value") from None
    caps = [
        ("n", req.n, limits.max_n),
        ("best_of", getattr(req, "best_of", None), limits.max_n),
        ("max_tokens", req.max_tokens, limits.max_tokens),
        ("max_completion_tokens", getattr(req, "max_completion_tokens", None), limits.max_tokens),
        ("logprobs", getattr(req, "logprobs", None), limits.max_logprobs),
        ("top_logprobs", getattr(req, "top_logprobs", None), limits.max_logprobs),
    ]
    for name, value, cap in caps:
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            raise BadRequest(f"{name} is {value}; this server allows at most {cap}", name, "limit_exceeded")
    best_of = getattr(req, "best_of", None)
    if best_of is not None and best_of < req.n:
        raise BadRequest(f"best_of ({best_of}) must be at least n ({req.n})", "best_of", "invalid_value")
    return req


def _param(loc: tuple) -> str | None:
    """pydantic's error location without its union-arm labels: `messages[0].content`."""
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.isidentifier() and p not in ("str", "int", "float", "bool", "list", "dict"):
            out += f".{p}" if out else p
    return out or None
