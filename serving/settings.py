"""Gateway settings: one typed object, read once from arguments and `FEDROUTER_*` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDROUTER_", extra="ignore")

    release: Path | None = None  # release folder (or a `latest` link) to serve
    host: str = "127.0.0.1"
    port: int = 8000
    # Attach mode: running vLLM OpenAI servers (several = replicas). Empty: start and supervise one.
    backends: list[str] = Field(default_factory=list)
    # Attach mode: start even though an attached vLLM answers strangers on its unguarded routes
    # (/adapters, /invocations, /metrics, ...; serving/attach_check.py), with a loud warning.
    allow_open_backend: bool = False
    # Attach mode: this gateway is the only one using its --backend replicas, so it unloads the
    # adapters of releases it retires. Unset (the default), it never unloads an adapter from an
    # attached replica: another gateway attached to the same replicas may still serve it (and its
    # keeper would load it back: the two would fight). vLLM's LRU (--max-cpu-loras) evicts retired
    # adapters from memory instead; their names stay listed. A supervised vLLM is the gateway's own
    # (a private socket): its retired adapters are always unloaded.
    sole_gateway: bool = False
    # Attach mode, route-only: the backend is a platform that owns adapters and placement (a
    # Kubernetes inference gateway in front of its vLLM pods, say). The gateway only routes: `auto`
    # -> the release's adapter, forwarded with the adapter's name in the release as `model` (the
    # platform serves each adapter, and the base model, under the release's names). Nothing is
    # stored, loaded or unloaded; a replica need not list adapters in /v1/models; the backend is not
    # probed for open engine routes (guarding them is the platform's part).
    route_only: bool = False
    # Supervised mode: how vLLM listens, extra arguments for it, how long its start may take.
    # Unset: a Unix socket in a fresh 0700 folder, no TCP port (only the gateway can connect). A port:
    # 127.0.0.1:PORT, which every local user reaches (benchmarks that call vLLM directly).
    vllm_port: int | None = None
    vllm_args: list[str] = Field(default_factory=list)
    vllm_start_timeout_s: float = 900.0
    vllm_kv_cache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE when the environment does not set it
    vllm_log: Path | None = None  # vLLM's output; default: a temporary file named at start
    # The key the gateway sends to vLLM (`Authorization: Bearer`). Supervised mode: unset -> a random
    # one per start, given to vLLM as VLLM_API_KEY (so not visible in `ps`): nobody else can use that
    # port. Attach mode: the key the attached servers were started with, if any.
    vllm_api_key: str | None = None
    restart_backoff_max_s: float = 60.0  # supervised vLLM restarts wait 1, 2, 4, ... s up to this
    # Requests
    request_timeout_s: float = 600.0  # one generation, end to end
    # Keep retrying a request that no replica accepted the connection for (covers a vLLM restart).
    # A request a replica did accept is never sent again: it may have been processed (503 instead).
    connect_retry_s: float = 180.0
    max_inflight: int = 512  # requests being answered (counted once their body is read); above: 429
    # Connections (and requests on them) uvicorn serves at once; past it uvicorn answers 503 itself,
    # before the gateway sees the request (`limit_concurrency`). Idle keep-alive connections count.
    max_connections: int = 2048
    # Limits checked at the edge, before anything is forwarded (400 past them, 413 for the body)
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = 30.0  # a client that takes longer to send its body gets 408
    # Bytes of request bodies being read at once, all requests together: a body that would go past
    # it gets 429 (Retry-After) instead of waiting, so slow senders cannot pin the gateway's memory.
    body_budget_bytes: int = 256 * 1024 * 1024
    max_n: int = 128  # choices per request (`n`, `best_of`); OpenAI's limit
    max_tokens: int = 32768  # `max_tokens` / `max_completion_tokens`
    max_logprobs: int = 20  # `logprobs` (completions) and `top_logprobs` (chat)
    # Tokens one request may ask for: max(n, best_of) × max_tokens × prompts (an absent max_tokens counts as
    # `max_tokens` above): 8 full-length choices, or 128 choices of 2048 tokens.
    max_request_tokens: int = 8 * 32768
    # Replicas: "affinity" sends an adapter's requests to the replica that holds it (consistent hashing
    # with bounded load, serving/affinity.py); "least-loaded" spreads every request evenly.
    # Client-scoped routing: `auto` among the clusters the requesting client trained. The client is
    # the one its API key maps to (api_keys_file / FEDROUTER_API_KEYS). Only with trust_client_header
    # (a proxy in front authenticates and sets it) does the header x-fedrouter-client name it, or,
    # with route_by_user too, OpenAI's `user` field: otherwise both are ignored, so nobody can probe
    # which client ids exist.
    trust_client_header: bool = False
    route_by_user: bool = False
    # API keys of the public API (`Authorization: Bearer KEY`, as vLLM's --api-key). Unset: open.
    # A JSON object {"KEY": {"client": "hospital-a", "adapters": ["math", "geo"]}} (both optional;
    # "KEY": "client-id" is short for {"client": ...}), in a file or in FEDROUTER_API_KEYS.
    api_keys_file: Path | None = None
    api_keys: str | None = None
    # Headers that describe routing beyond the adapter chosen: x-fedrouter-score (the cosine to the
    # chosen centroid: enough probes recover the centroids) and x-fedrouter-routing (local/global).
    expose_routing_headers: bool = False
    replica_policy: str = "affinity"
    affinity_load_factor: float = 1.25  # a replica takes at most this multiple of the mean load in flight
    affinity_min_inflight: int = 0  # ... or, whatever the others hold, up to this many (serving/affinity.py)
    # Routing
    embed_device: str = "cpu"
    # "auto": MiniLM on ONNX Runtime int8 when `fedrouter models prepare` exported it (same vector
    # space, ~2.5 ms a prompt), else PyTorch; or "onnx-int8", "onnx-fp32", "onnx-int8-all", "torch".
    embed_backend: str = "auto"
    # Threads of the gateway's embedder (torch or onnxruntime). 1: on a CPU shared with vLLM, a multi-threaded
    # embedder's OpenMP barriers wait on threads descheduled by vLLM's, and one short prompt
    # took ~500 ms instead of ~15 ms (measured, benchmarks/README.md). 0: torch's default.
    embed_threads: int = 1
    max_batch: int = 64  # most prompts embedded in one forward pass
    # The text routed on is cut to this many characters (the embedder further truncates to its own
    # token limit, 256 for MiniLM): no prompt holds the embedder longer than a normal batch.
    route_max_chars: int = 2048
    route_timeout_s: float = 30.0  # waiting for the embedder longer than this: 503
    # Hot reload
    # Bearer token of /admin routes; unset: the routes do not exist. Give it in FEDROUTER_ADMIN_TOKEN
    # or a file (admin_token_file / --admin-token-file), not on the command line (visible in `ps`).
    admin_token: str | None = None
    admin_token_file: Path | None = None
    watch: bool = False  # follow the release path (a `latest` link) and reload when it changes
    watch_interval_s: float = 2.0
    drain_timeout_s: float = 600.0  # how long a retired release waits for its requests before unloading
    reload_timeout_s: float = 300.0  # a reload waiting longer than this for another one: 409
    register_concurrency: int = 8  # adapters loaded into one vLLM replica at once (start and reload)
    # The content-addressed copies of adapters that vLLM reads (serving/adapter_store.py); unset:
    # $FEDROUTER_CACHE/adapters (~/.cache/fedrouter/adapters).
    adapter_store: Path | None = None

    def token(self) -> str | None:
        """The admin token, read from the file when one is given."""
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text().strip() or None
        return self.admin_token
