"""Two real tiny vLLMs through Ray Serve (two engine replicas, each supervising its own vLLM, one
ingress): every adapter's requests are answered on its home replica, both replicas do adapter work,
every answer is the same whichever replica gives it, and a publish of a new release under requests
fails none of them. `slow`: two vLLM processes and a Ray cluster on 2 cores take minutes."""

from __future__ import annotations

import threading

import httpx
import pytest

pytest.importorskip("ray.serve")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from benchmarks.ray_throughput import _served  # noqa: E402  (replica -> content name -> requests answered)
from fedrouter.router.build import build_release  # noqa: E402
from fedrouter.router.embed import HashEmbedder  # noqa: E402
from fedrouter.serving.affinity import AffinityRing  # noqa: E402
from fedrouter.serving.launch import free_port  # noqa: E402
from fedrouter.serving.ray.app import APP, RaySpec  # noqa: E402
from fedrouter.serving.ray.cluster import deploy, publish  # noqa: E402
from fedrouter.serving.registry import backend_adapter_name  # noqa: E402
from tests.tiny import TASK_PROBES, make_lora, make_tiny_llama, write_examples  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GREEDY = {"prompt": "What is the capital of Germany?", "temperature": 0.0, "max_tokens": 8}


def _release(tmp_path, base, folder: str, seed: int):
    adapters = {n: make_lora(base, tmp_path / f"src-{folder}" / n, seed=seed + i) for i, n in enumerate(TASK_PROBES)}
    return build_release(
        tmp_path / folder,
        base_model=str(base),
        base_name="tiny",
        adapters=adapters,
        examples=write_examples(tmp_path / f"examples-{folder}"),
        embedder=HashEmbedder(256),
    )


def test_two_real_engines_keep_each_adapter_home_and_answer_alike(tmp_path):
    base = make_tiny_llama(tmp_path / "base")
    v1, v2 = _release(tmp_path, base, "v1", seed=1), _release(tmp_path, base, "v2", seed=11)
    names = list(v1.manifest.adapters)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        spec = RaySpec(
            release=str(v1.path),
            engine_replicas=2,
            engine_num_cpus=0.5,
            ingress_num_cpus=0.5,
            models_per_replica=len(names),
            engine_options={"kv_cache_gib": 1},
        )
        deploy(spec, port=port, timeout_s=900)
        engine = serve.get_deployment_handle("Engine", APP)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
            answers: dict[str, set[str]] = {n: set() for n in names}
            for _ in range(3):
                for n in names:
                    r = c.post("/v1/completions", json={"model": n, **GREEDY})
                    assert r.status_code == 200, r.text
                    answers[n].add(r.json()["choices"][0]["text"])
            assert all(len(a) == 1 for a in answers.values()), answers  # greedy: one answer per adapter
            assert len({next(iter(a)) for a in answers.values()}) > 1  # the adapters differ

            served = _served(engine)
            content = {n: backend_adapter_name(n, v1.manifest.digests[n]) for n in names}
            ring = AffinityRing(sorted(served), vnodes=64)
            ring.set_keys(set(content.values()))  # as every router is seeded at deploy
            for n, cname in content.items():
                on = {replica: counts.get(cname, 0) for replica, counts in served.items()}
                assert on[ring.home(cname)] == 3 and sum(on.values()) == 3, (n, on)  # all at home
            assert all(any(v for v in counts.values()) for counts in served.values())  # both do adapter work

            failures: list[str] = []
            stop = threading.Event()

            def traffic() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as tc:
                    while not stop.is_set():
                        r = tc.post("/v1/completions", json={"model": "auto", **GREEDY})
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:200]}")

            clients = [threading.Thread(target=traffic) for _ in range(4)]
            for t in clients:
                t.start()
            try:
                result = publish(str(v2.path), timeout_s=600)
            finally:
                stop.set()
                for t in clients:
                    t.join()
            assert failures == [] and result["release"] == "v2" and not result["refused"], (failures[:3], result)

            # the published release's adapters go home too: the ingress reseeded its router with them
            before = _served(engine)
            for _ in range(2):
                for n in names:
                    r = c.post("/v1/completions", json={"model": n, **GREEDY})
                    assert r.status_code == 200 and r.headers["x-fedrouter-release"] == "v2", r.text
            after = _served(engine)
            ring.set_keys({backend_adapter_name(n, v2.manifest.digests[n]) for n in names})
            for n in names:
                cname = backend_adapter_name(n, v2.manifest.digests[n])
                on = {rep: after[rep].get(cname, 0) - before[rep].get(cname, 0) for rep in after}
                assert on[ring.home(cname)] == 2 and sum(on.values()) == 2, (n, on)
    finally:
        serve.shutdown()
        ray.shutdown()
