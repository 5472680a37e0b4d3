"""Replica choice by adapter: consistent hashing with bounded load (serving/affinity.py), and the pool
that uses it. Expected homes are written out: the hash is fixed (blake2b), so they never change."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from fedrouter.router.embed import HashEmbedder
from fedrouter.serving.affinity import AffinityRing
from fedrouter.serving.app import create_app
from fedrouter.serving.registry import backend_adapter_name
from fedrouter.serving.settings import GatewaySettings
from tests.unit.test_gateway import FakeVLLM, make_release

A, B, C = "http://a:8000", "http://b:8000", "http://c:8000"
KEYS = [f"adapter{i}@v1" for i in range(8)]


def test_each_adapter_has_a_fixed_home():
    ring = AffinityRing([A, B])
    homes = [ring.order(k)[0] for k in KEYS]
    assert homes == [B, B, B, A, A, B, A, B]
    assert ring.order("adapter3@v1") == (A, B)  # the rest of the ring: where it goes if A is gone


def test_a_new_replica_takes_adapters_only_from_others_and_moves_no_other():
    before, after = AffinityRing([A, B]), AffinityRing([A, B, C])
    moved = {k: after.order(k)[0] for k in KEYS if after.order(k)[0] != before.order(k)[0]}
    assert moved == {"adapter0@v1": C, "adapter2@v1": C, "adapter5@v1": C}


def test_a_known_adapter_set_is_split_evenly():
    ring = AffinityRing([A, B])
    ring.set_keys(KEYS)  # hashing alone puts 5 of the 8 on B
    assert [ring.home(k) for k in KEYS] == [B, B, B, A, A, A, A, B]
    three = AffinityRing([A, B, C])
    three.set_keys(KEYS)  # at most ceil(8 / 3) = 3 each
    assert [three.home(k) for k in KEYS] == [C, B, C, A, A, C, A, B]
    assert ring.choose("adapter5@v1", {A: 0, B: 0}) == (A, True)


def test_home_while_within_the_load_bound_else_the_least_loaded():
    ring = AffinityRing([A, B], load_factor=1.25)
    key = "adapter0@v1"  # home B
    assert ring.choose(key, {A: 0, B: 0}) == (B, True)
    # bound = ceil(1.25 * (1 + 1 + 1) / 2) = 2: B at 1 may take one more
    assert ring.choose(key, {A: 1, B: 1}) == (B, True)
    # bound = ceil(1.25 * (0 + 2 + 1) / 2) = 2: B at 2 is full, the request spills to A
    assert ring.choose(key, {A: 0, B: 2}) == (A, False)
    # with a looser bound (2x the mean) B keeps it: ceil(2 * 3 / 2) = 3
    assert AffinityRing([A, B], load_factor=2.0).choose(key, {A: 0, B: 2}) == (B, True)


def test_a_replica_below_the_floor_keeps_its_adapters_whatever_the_others_hold():
    key = "adapter0@v1"  # home B
    floor = AffinityRing([A, B], load_factor=1.25, min_inflight=4)
    assert floor.choose(key, {A: 0, B: 2}) == (B, True)  # the bound alone spills this one (above)
    assert floor.choose(key, {A: 0, B: 3}) == (B, True)  # B takes its 4th
    assert floor.choose(key, {A: 0, B: 4}) == (A, False)  # not a 5th: floor 4, bound ceil(1.25 * 5 / 2) = 4
    # past the floor the bound decides again: ceil(1.25 * (2 + 4 + 1) / 2) = 5, then ceil(1.25 * 8 / 2) = 5
    assert floor.choose(key, {A: 2, B: 4}) == (B, True)
    assert floor.choose(key, {A: 2, B: 5}) == (A, False)


def test_home_down_goes_to_the_next_replica_on_the_ring():
    ring = AffinityRing([A, B, C])
    assert ring.order("adapter0@v1")[0] == C
    second = ring.order("adapter0@v1")[1]
    assert ring.choose("adapter0@v1", {A: 0, B: 0}) == (second, True)


def test_no_adapter_goes_to_the_least_loaded_in_replica_order():
    ring = AffinityRing([A, B])
    assert ring.choose(None, {A: 1, B: 1}) == (A, False)
    assert ring.choose(None, {A: 2, B: 1}) == (B, False)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="load_factor"):
        AffinityRing([A], load_factor=0.5)
    with pytest.raises(ValueError, match="min_inflight"):
        AffinityRing([A], min_inflight=-1)
    with pytest.raises(ValueError, match="at least one"):
        AffinityRing([])
    with pytest.raises(ValueError, match="no replica"):
        AffinityRing([A]).choose("x@v1", {})


def test_gateway_sends_each_adapter_to_its_home_and_reports_per_replica_load(tmp_path, fake_adapters):
    vllm, seen = FakeVLLM(), []

    def transport(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("completions"):
            seen.append((f"http://{request.url.host}", json.loads(request.content)["model"]))
        return vllm(request)

    release = make_release(tmp_path / "releases" / "v1", fake_adapters)
    settings = GatewaySettings(release=release.path, backends=["http://r0", "http://r1"], replica_policy="affinity")
    app = create_app(settings, embedder=HashEmbedder(256), transport=httpx.MockTransport(transport))
    with TestClient(app) as client:
        for _ in range(3):
            for model in ("math", "geo", "sentiment"):
                r = client.post("/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 1})
                assert r.status_code == 200
        metrics = client.get("/metrics").text
    names = {n: backend_adapter_name(n, release.manifest.digests[n]) for n in ("math", "geo", "sentiment")}
    ring = AffinityRing(["http://r0", "http://r1"])
    ring.set_keys(names.values())  # what the gateway does with the names the replicas serve
    for public, vllm_name in names.items():
        # every request for an adapter went to one replica: its home on the ring
        assert {url for url, m in seen if m == vllm_name} == {ring.home(vllm_name)}, public
    replica = {"http://r0": "replica-0", "http://r1": "replica-1"}  # /metrics never shows URLs
    home_counts = {r: 3 * sum(ring.home(v) == url for v in names.values()) for url, r in replica.items()}
    assert 'fedrouter_backend_inflight_requests{backend="replica-1"} 0.0' in metrics
    for r, n in home_counts.items():
        if n:
            assert f'fedrouter_backend_requests_total{{backend="{r}",placement="home"}} {float(n)}' in metrics
    assert "http://r0" not in metrics
