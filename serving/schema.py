"""The request schema of the two generation endpoints, checked once at the edge.

The rule: a request vLLM accepts for an adapter, the gateway accepts for `model="auto"` and for
that adapter. So the models here declare only the fields the gateway reads itself, and are strict
on those (no coercion: `stream: "false"` and `n: "2"` are refused; ranges and caps from `Limits`):

    model, stream, n, best_of, max_tokens, max_completion_tokens, logprobs, top_logprobs, user,
    messages[].role, messages[].content (text parts: what `auto` routes on), prompt

Every other field is vLLM's to judge: it is kept (`extra="allow"`, as vLLM's `OpenAIBaseModel`)
and forwarded untouched, and a field vLLM does not know either is logged there and ignored, as
vLLM does. OpenAI's nullable fields may be null. The whole body is bounded: its bytes
(GatewaySettings.max_body_bytes), its nesting (`MAX_JSON_DEPTH`), and the tokens it may ask for
(`n` or `best_of` × `max_tokens` × the prompts of a batch, `Limits.max_request_tokens`). JSON numbers are finite (the
parser refuses NaN, Infinity and numbers that overflow a double). The body is forwarded as the
client sent it, `model` rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedrouter.serving.errors import BadRequest

log = logging.getLogger("fedrouter.serving")

# Levels of nesting in a whole body. An OpenAI request needs ~6 (messages[0].content[0].image_url.url)
# plus a tool's JSON schema; past this the body is refused before any template or grammar sees it.
MAX_JSON_DEPTH = 64

# What vLLM's completions endpoint generates at most per choice when max_tokens is absent or null
COMPLETION_MAX_TOKENS = 16

TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
Count = Annotated[int, Field(ge=1)]


class Tolerant(BaseModel):
    """Strict on the declared fields, every other field kept as sent (vLLM judges it)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class ContentPart(Tolerant):
    """A part of a message's content. Only text parts are read (routing); any other kind (images,
    audio, files, refusals, vLLM's `{"image_url": URL}` without a type) is vLLM's business."""

    type: str | None = None
    text: str | None = None


class Message(Tolerant):
    """One chat message. The gateway reads `role` and `content`; `name`, `tool_calls`,
    `tool_call_id`, and what the `openai` SDK adds when a response message is sent back
    (`refusal`, `annotations`, `audio`, `function_call`, `reasoning_content`) are forwarded."""

    role: str  # any string: vLLM takes custom roles (the chat template decides)
    content: str | list[ContentPart | str] | None = None  # vLLM also takes plain strings as parts


class Sampling(Tolerant):
    """The fields both endpoints read."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    stream: bool | None = None
    n: Count | None = None
    max_tokens: Count | None = None
    user: str | None = None  # a client id only with route_by_user from a trusted proxy (serving/auth.py)
    # Not read, but checked as vLLM checks it (lax, the same int64 range), so that a hostile value
    # is refused here and not inside the engine: refuses exactly what vLLM refuses.
    seed: Annotated[int, Field(strict=False, ge=-(2**63), le=2**63 - 1)] | None = None

    @property
    def streaming(self) -> bool:
        return bool(self.stream)

    def choices(self) -> int:
        """How many sequences vLLM generates for this request: for each of its prompts, `n`
        (`best_of` when larger)."""
        return self.prompts() * max(self.n or 1, _declared(self, "best_of") or 1)

    def prompts(self) -> int:
        return 1

    def token_budget(self) -> int | None:
        return self.max_tokens


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Count | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0)] | None = None

    def token_budget(self) -> int | None:
        # vLLM: max_completion_tokens, when given, takes the place of the deprecated max_tokens
        return self.max_completion_tokens or self.max_tokens

    def route_text(self) -> str | None:
        """What model="auto" routes on: the text of the last user message that has any (its text
        parts joined); in a conversation without one, the last message of any role with text."""
        other = None
        for m in reversed(self.messages):
            text = _text_of(m.content)
            if text is not None and m.role == "user":
                return text
            other = other if other is not None else text
        return other


def _text_of(content: str | list[ContentPart | str] | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    parts = [p if isinstance(p, str) else p.text for p in content if _is_text(p)]
    return "\n".join(parts) if parts else None


def _is_text(part: ContentPart | str) -> bool:
    return isinstance(part, str) or (part.type == "text" and part.text is not None)


Prompt = (
    str
    | Annotated[list[str], Field(min_length=1)]
    | Annotated[list[TokenId], Field(min_length=1)]
    | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
)


class CompletionRequest(Sampling):
    prompt: Prompt | None = None  # vLLM also takes `prompt_embeds` instead (forwarded)
    # 0 with `echo`: the prompt's own log-probabilities, nothing generated (vLLM generates one
    # token and drops it); 0 without echo is refused by vLLM itself
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    best_of: Count | None = None
    logprobs: Annotated[int, Field(ge=0)] | None = None

    def token_budget(self) -> int | None:
        # vLLM's completions (as OpenAI's) read an absent or null max_tokens as 16
        return COMPLETION_MAX_TOKENS if self.max_tokens is None else self.max_tokens

    def prompts(self) -> int:
        """A list of strings or of token-id lists is a batch: vLLM answers each prompt."""
        if isinstance(self.prompt, list) and not isinstance(self.prompt[0], int):
            return len(self.prompt)
        return 1

    def route_text(self) -> str | None:
        """The prompt when it is text (token ids cannot be routed)."""
        if self.prompt is None or isinstance(self.prompt, str):
            return self.prompt
        if isinstance(self.prompt[0], str):
            if len(self.prompt) > 1:
                raise BadRequest("model='auto' routes one prompt per request; send the prompts separately", "prompt")
            return self.prompt[0]
        return None


@dataclass(frozen=True)
class Limits:
    """Caps checked at the edge (values from GatewaySettings, where each default is defined)."""

    max_n: int
    max_tokens: int
    max_logprobs: int
    max_request_tokens: int  # choices × max_tokens; an absent max_tokens counts as `max_tokens` (chat)


def parse(model: type[Sampling], body: dict[str, Any], limits: Limits) -> Sampling:
    """The typed request, or BadRequest naming the first field that is wrong."""
    depth = _depth(body)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(f"the request is nested {depth} levels deep; at most {MAX_JSON_DEPTH}", None, "invalid_value")
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        # the deepest error: of a union's arms, the one that got furthest names the field best
        first = max(e.errors(include_url=False), key=lambda err: len(err.get("loc", ())))
        param = _param(first.get("loc", ()))
        msg = first.get("msg", "invalid value")
        raise BadRequest(f"{param or 'request'}: {msg}"[:500], param, "invalid_value") from None
    caps = [
        ("n", req.n, limits.max_n),
        ("best_of", _declared(req, "best_of"), limits.max_n),
        ("max_tokens", req.max_tokens, limits.max_tokens),
        ("max_completion_tokens", _declared(req, "max_completion_tokens"), limits.max_tokens),
        ("logprobs", _declared(req, "logprobs"), limits.max_logprobs),
        ("top_logprobs", _declared(req, "top_logprobs"), limits.max_logprobs),
    ]
    for name, value, cap in caps:
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            raise BadRequest(f"{name} is {value}; this server allows at most {cap}", name, "limit_exceeded")
    best_of = _declared(req, "best_of")
    if best_of is not None and best_of < (req.n or 1):
        raise BadRequest(f"best_of ({best_of}) must be at least n ({req.n})", "best_of", "invalid_value")
    budget = req.token_budget()
    budget = limits.max_tokens if budget is None else max(budget, 1)  # echo with 0: one token, dropped
    if req.choices() * budget > limits.max_request_tokens:
        per_prompt = req.choices() // req.prompts()
        if req.prompts() > 1:
            param, what = "prompt", f"prompts × n × max_tokens is {req.prompts()} prompts × {per_prompt}"
        else:
            param = "best_of" if best_of and per_prompt > (req.n or 1) else "n"
            what = f"{param} × max_tokens is {per_prompt}"
        raise BadRequest(
            f"{what} × {budget} = {req.choices() * budget} tokens; this server allows at most "
            f"{limits.max_request_tokens} per request (an absent max_tokens counts as {limits.max_tokens} on chat, "
            f"16 on completions)",
            param,
            "limit_exceeded",
        )
    if req.model_extra:
        log.debug("forwarding fields the gateway does not read: %s", sorted(req.model_extra)[:20])
    return req


def _declared(req: Sampling, name: str) -> Any:
    """A field the request's own schema declares (typed and checked), else None. Never
    `getattr`: with extra="allow" an undeclared field is an attribute too, holding whatever the
    client sent (`best_of: "x"` on chat, where vLLM has no such field and ignores it)."""
    return getattr(req, name) if name in type(req).model_fields else None


def _depth(value: Any) -> int:
    """Levels of nesting of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        d += 1
        deepest = max(deepest, d)
        if d <= MAX_JSON_DEPTH:  # deeper than that is refused anyway: stop counting
            stack.extend((c, d) for c in v)
    return deepest


def _param(loc: tuple) -> str | None:
    """pydantic's error location without its union-arm labels (types, model class names):
    `messages[0].content[0].text`."""
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.isidentifier() and p not in ("str", "int", "float", "bool", "list", "dict") and not p[0].isupper():  # fmt: skip
            out += f".{p}" if out else p
    return out or None
