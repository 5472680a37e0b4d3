"""Serving past one machine on Ray Serve: the gateway as an ingress deployment in front of engine
replicas that each supervise their own vLLM (`fedrouter serve --ray`; the `fedrouter[ray]` extra).
Nothing in the single-machine gateway imports this package."""
