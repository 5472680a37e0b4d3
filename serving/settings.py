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
    # Supervised mode: where vLLM listens, extra arguments for it, how long its start may take.
    vllm_host: str = "127.0.0.1"
    vllm_port: int = 8100
    vllm_args: list[str] = Field(default_factory=list)
    vllm_start_timeout_s: float = 900.0
    vllm_kv_cache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE when the environment does not set it
    vllm_log: Path | None = None  # vLLM's output; default: a temporary file named at start
    # Requests
    request_timeout_s: float = 600.0  # one generation, end to end
    connect_retry_s: float = 180.0  # keep retrying a request no backend answered (covers a vLLM restart)
    max_inflight: int = 512  # above this, 429
    # Replicas: "affinity" sends an adapter's requests to the replica that holds it (consistent hashing
    # with bounded load, serving/affinity.py); "least-loaded" spreads every request evenly.
    replica_policy: str = "affinity"
    affinity_load_factor: float = 1.25  # a replica takes at most this multiple of the mean load in flight
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
    # Hot reload
    admin_token: str | None = None  # bearer token of /admin routes; unset: the routes do not exist
    watch: bool = False  # follow the release path (a `latest` link) and reload when it changes
    watch_interval_s: float = 2.0
    drain_timeout_s: float = 600.0  # how long a retired release waits for its requests before unloading
