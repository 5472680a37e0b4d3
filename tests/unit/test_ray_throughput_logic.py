"""benchmarks/ray_throughput.py's arithmetic: home-hit share from per-replica counters and from the
gateway's /metrics, paired ratios, CPU per request by part."""

import asyncio
from collections import Counter

import httpx

from benchmarks import ray_throughput
from benchmarks.ray_throughput import (
    cpu_ms_per_request,
    cpu_table,
    gateway_home_share,
    home_share,
    paired_ratios,
    per_replica,
    placements,
)


def test_home_share_counts_only_the_window_and_only_the_home_replica():
    before = {"r1": {"a@1": 5}, "r2": {"b@2": 2}}
    after = {"r1": {"a@1": 14, "b@2": 1}, "r2": {"a@1": 1, "b@2": 11, "other": 7}}
    share = home_share(before, after, {"a@1": "r1", "b@2": "r2"})
    # window: a: 9 on r1 (home) + 1 on r2; b: 1 on r1 + 9 on r2 (home); "other" is no adapter of the release
    assert share["requests"] == 20 and share["on_home"] == 18
    assert share["share"] == 0.9
    assert share["per_adapter"] == {"a@1": 0.9, "b@2": 0.9}


def test_home_share_of_an_empty_window_is_none():
    counts = {"r1": {"a@1": 3}, "r2": {}}
    assert home_share(counts, counts, {"a@1": "r1"}) == {"requests": 0, "on_home": 0, "share": None, "per_adapter": {}}


def test_paired_ratios_are_ray_over_gateway_of_the_same_round():
    windows = {"gateway": [{"x": 100.0}, {"x": 50.0}], "ray": [{"x": 90.0}, {"x": 60.0}]}
    assert paired_ratios(windows, "x") == [0.9, 1.2]


def test_per_replica_lists_replicas_that_are_no_adapters_home():
    assert per_replica({"a": "r1", "b": "r1", "c": "r1"}, 2) == [3, 0]
    assert per_replica({"a": "r2", "b": "r1", "c": "r2"}, 2) == [2, 1]


def test_placements_read_a_real_gateways_metrics_home_and_spill(tmp_path, fake_adapters):
    """Twelve requests for one adapter at once through the gateway's affinity ring over 2 replicas:
    the load bound spills some, and the placements read back from /metrics add up."""
    from fedrouter.router.embed import HashEmbedder
    from fedrouter.serving.app import create_app
    from fedrouter.serving.settings import GatewaySettings
    from tests.unit.test_gateway import FakeVLLM, make_release

    vllm = FakeVLLM()

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("completions"):
            await asyncio.sleep(0.05)  # the requests overlap: in flight together
        return vllm(request)

    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    settings = GatewaySettings(release=release.path, backends=["http://r0", "http://r1"], replica_policy="affinity")
    app = create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(slow))

    async def go() -> str:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                body = {"model": "math", "prompt": "hi", "max_tokens": 1}
                answers = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(12)))
                assert all(r.status_code == 200 for r in answers)
                return (await c.get("/metrics")).text

    counts = placements(asyncio.run(go()))
    assert counts["home"] + counts["spill"] == 12 and counts["spill"] > 0 and counts["home"] > counts["spill"]
    assert gateway_home_share(Counter(), counts)["share"] == round(counts["home"] / 12, 4)


def test_gateway_home_share_is_home_over_adapter_placements_in_the_window():
    before = Counter({"home": 10, "spill": 1, "least-loaded": 5})
    after = Counter({"home": 28, "spill": 3, "least-loaded": 50})  # base-model requests do not count
    assert gateway_home_share(before, after) == {"requests": 20, "on_home": 18, "share": 0.9}
    assert gateway_home_share(after, after)["share"] is None


def test_cpu_per_request_counts_the_window_and_new_processes_from_zero():
    before = {1: ("gateway", 10.0), 2: ("gateway vLLM", 100.0), 3: ("client", 5.0)}
    after = {1: ("gateway", 10.5), 2: ("gateway vLLM", 101.0), 3: ("client", 5.25), 4: ("gateway vLLM", 0.5)}
    ms = cpu_ms_per_request(before, after, answered=50)
    assert ms["gateway"] == 10.0 and ms["gateway vLLM"] == 30.0 and ms["client"] == 5.0
    assert ms["ray ingress"] == 0.0 and set(ms) == set(ray_throughput.PARTS)
    assert cpu_ms_per_request(before, after, answered=0)["gateway"] is None


def test_cpu_table_sums_each_setups_own_parts():
    zero = dict.fromkeys(ray_throughput.PARTS, 0.0)
    gw = [{**zero, "client": 1.0, "gateway": 2.0, "gateway vLLM": 10.0, "ray system": 0.5}]
    ray = [{**zero, "client": 1.0, "ray ingress": 2.0, "ray engine": 1.5, "ray system": 0.5, "ray vLLM": 10.0}]
    windows = {
        "8": {"gateway": [{"cpu_ms_per_request": x} for x in gw], "ray": [{"cpu_ms_per_request": x} for x in ray]}
    }
    rows = cpu_table(windows)
    assert "| 8 | gateway | 1.00 | 2.00 | – | – | 10.00 | 12.00 |" in rows  # Ray's idle processes are not the gateway's
    assert "| 8 | ray | 1.00 | 2.00 | 1.50 | 0.50 | 10.00 | 14.00 |" in rows
    assert cpu_table({"8": {"gateway": [{}], "ray": [{}]}}) == []  # results measured before the CPU columns
