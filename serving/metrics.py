"""Prometheus metrics of one gateway instance (its own registry: no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedrouter_requests",
            "Requests answered, by adapter, how the model was chosen, and HTTP status",
            ["adapter", "selection", "status"],
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "fedrouter_backend_errors",
            "Failed calls to a vLLM backend",
            ["backend"],
            registry=self.registry,
        )
        self.routing_seconds = Histogram(
            "fedrouter_routing_seconds",
            "Time to route one prompt (embedding included)",
            buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.embed_batch = Histogram(
            "fedrouter_embed_batch_size",
            "Prompts per embedding forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "fedrouter_request_seconds",
            "Time from a request's arrival to its last byte, streamed or not",
            ["selection"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=self.registry,
        )
        self.backend_inflight = Gauge(
            "fedrouter_backend_inflight_requests",
            "Requests in flight on each vLLM replica",
            ["backend"],
            registry=self.registry,
        )
        self.backend_requests = Counter(
            "fedrouter_backend_requests",
            "Requests sent to each vLLM replica, by placement: home (the adapter's home replica), spill "
            "(its home was over the load bound), or least-loaded (no adapter, or that policy)",
            ["backend", "placement"],
            registry=self.registry,
        )
        self.inflight = Gauge("fedrouter_inflight_requests", "Requests being answered", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
