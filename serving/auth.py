"""Who is asking: API keys of the public API, and the client a request is routed for.

Keys work as vLLM's `--api-key` users expect (`Authorization: Bearer KEY`; without a valid key
every /v1 route answers 401), and each key may map to a FedRouter client id (then `auto` routes
among the clusters that client trained) and to the adapters it may use (then other adapters do
not exist for it: 404, absent from /v1/models, and `auto` routes among its adapters only).
With keys, /metrics too needs a key, one without an adapter list: its labels name every adapter.

The key map is a JSON object, in a file or in FEDROUTER_API_KEYS:

    {"sk-a": {"client": "hospital-a", "adapters": ["math"]}, "sk-b": "hospital-b", "sk-c": {}}

Keys are held as SHA-256 digests and looked up by digest, so a comparison never depends on how
much of a guessed key is right.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from fedrouter.serving.errors import Unauthorized

CLIENT_HEADER = "x-fedrouter-client"  # names the requester's client (only from a trusted proxy)


@dataclass(frozen=True)
class Caller:
    client: str | None = None  # FedRouter client id: `auto` routes among its clusters
    adapters: frozenset[str] | None = None  # the adapters it may use; None: all


ANYONE = Caller()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


class ApiKeys:
    def __init__(
        self, keys: dict[str, Caller] | None, *, trust_client_header: bool = False, route_by_user: bool = False
    ):
        self._keys = {_digest(k): c for k, c in keys.items()} if keys else None
        self._trust_header, self._by_user = trust_client_header, route_by_user

    @property
    def required(self) -> bool:
        return self._keys is not None

    @classmethod
    def from_settings(cls, settings) -> ApiKeys:
        """From `api_keys_file` or `api_keys` (GatewaySettings); ValueError saying what is wrong."""
        text, source = settings.api_keys, "FEDROUTER_API_KEYS"
        if settings.api_keys_file is not None:
            text, source = Path(settings.api_keys_file).read_text(), str(settings.api_keys_file)
        keys = parse_keys(text, source) if text is not None and text.strip() else None
        return cls(keys, trust_client_header=settings.trust_client_header, route_by_user=settings.route_by_user)

    def caller(self, request: Request) -> Caller:
        """The caller of a /v1 request: 401 without a valid key when keys are configured."""
        if self._keys is None:
            return ANYONE
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        caller = self._keys.get(_digest(key.strip())) if scheme.lower() == "bearer" and key.strip() else None
        if caller is None:
            raise Unauthorized("a valid API key is needed: 'Authorization: Bearer <key>'", None, "invalid_api_key")
        return caller

    def check_sees_everything(self, request: Request) -> None:
        """For what names every adapter and counts every tenant's traffic (/metrics): open without
        keys; with keys, a valid key without an adapter list (one that sees them all in /v1/models
        anyway), else 401."""
        if self._keys is not None and self.caller(request).adapters is not None:
            raise Unauthorized(
                "this API key may not read the gateway's metrics: they name every adapter", None, "invalid_api_key"
            )

    def client(self, request: Request, caller: Caller, user: str | None) -> str | None:
        """The client id `auto` routes for: the key's; else, only from a trusted proxy, the header
        (or OpenAI's `user` field with route_by_user). None: routed among every cluster."""
        if caller.client is not None:
            return caller.client
        if self._trust_header:
            return request.headers.get(CLIENT_HEADER) or (user if self._by_user else None)
        return None


def parse_keys(text: str, source: str) -> dict[str, Caller]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"API keys in {source}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"API keys in {source}: expected a non-empty JSON object {{key: client or {{...}}}}")
    keys = {}
    for key, value in raw.items():
        where = f"API keys in {source}, key #{len(keys) + 1}"
        if not key or not all("!" <= ch <= "~" for ch in key):
            # a header carries bytes (read as latin-1): any other key could never be sent and match
            raise ValueError(f"{where}: a key must be non-empty printable ASCII, without spaces")
        if isinstance(value, str) or value is None:
            value = {"client": value}
        if not isinstance(value, dict) or set(value) - {"client", "adapters"}:
            raise ValueError(f"{where}: expected a client id or an object with 'client' and 'adapters'")
        client, adapters = value.get("client"), value.get("adapters")
        if client is not None and (not isinstance(client, str) or not client):
            raise ValueError(f"{where}: 'client' must be a non-empty string")
        if adapters is not None and (not isinstance(adapters, list) or not all(isinstance(a, str) for a in adapters)):
            raise ValueError(f"{where}: 'adapters' must be a list of adapter names")
        keys[key] = Caller(client, frozenset(adapters) if adapters is not None else None)
    return keys
