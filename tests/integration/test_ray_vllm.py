"""One real tiny vLLM through Ray Serve (an engine replica supervising it, the ingress in front),
greedy outputs compared with the same vLLM started directly. The two never run at once (2 cores):
Ray first, then vLLM alone."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("ray.serve")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from fedrouter.router.build import build_release  # noqa: E402
from fedrouter.router.embed import HashEmbedder  # noqa: E402
from fedrouter.serving.launch import free_port, vllm_servers  # noqa: E402
from fedrouter.serving.ray.app import RaySpec  # noqa: E402
from fedrouter.serving.ray.cluster import deploy  # noqa: E402
from fedrouter.serving.registry import backend_adapter_name  # noqa: E402
from tests.tiny import TASK_PROBES, make_lora, make_tiny_llama, write_examples  # noqa: E402

pytestmark = pytest.mark.integration
PROMPT = "What is the capital of Germany?"
GREEDY = {"prompt": PROMPT, "temperature": 0.0, "max_tokens": 12}


def test_greedy_answers_through_ray_equal_vllm_direct(tmp_path):
    base = make_tiny_llama(tmp_path / "base")
    adapters = {n: make_lora(base, tmp_path / "adapters" / n, seed=i + 1) for i, n in enumerate(TASK_PROBES)}
    release = build_release(
        tmp_path / "v1",
        base_model=str(base),
        base_name="tiny",
        adapters=adapters,
        examples=write_examples(tmp_path / "examples"),
        embedder=HashEmbedder(256),
    )
    models = ["tiny", *adapters]

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        spec = RaySpec(
            release=str(release.path),
            engine_replicas=1,
            engine_num_cpus=1,
            ingress_num_cpus=0.5,
            engine_options={"kv_cache_gib": 1},
        )
        deploy(spec, port=port, timeout_s=900)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
            through_ray = {}
            for m in models:
                r = c.post("/v1/completions", json={"model": m, **GREEDY})
                assert r.status_code == 200, r.text
                assert r.json()["model"] == m and r.headers["x-fedrouter-release"] == "v1"
                through_ray[m] = r.json()["choices"][0]["text"]
            r = c.post("/v1/completions", json={"model": "auto", **GREEDY})  # routed to an adapter
            assert r.status_code == 200 and r.headers["x-fedrouter-adapter"] in adapters
    finally:
        serve.shutdown()
        ray.shutdown()

    with vllm_servers(release.path, tmp_path / "direct") as (urls, key):
        with httpx.Client(base_url=urls[0], timeout=300, headers={"authorization": f"Bearer {key}"}) as c:
            direct = {}
            for m in models:
                name = m
                if m in adapters:
                    name = backend_adapter_name(m, release.manifest.digests[m])
                    loaded = c.post(
                        "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(release.adapter_dir(m))}
                    )
                    assert loaded.status_code == 200, loaded.text
                r = c.post("/v1/completions", json={"model": name, **GREEDY})
                direct[m] = r.json()["choices"][0]["text"]
    assert through_ray == direct
    assert len(set(direct.values())) > 1  # the adapters change the output: the comparison means something
