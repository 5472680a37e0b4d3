"""benchmarks/ray_throughput.py's arithmetic: home-hit share from per-replica counters and from the
gateway's /metrics, paired ratios, CPU per request by part."""

from collections import Counter

import httpx
import pytest

from benchmarks import ray_throughput
from benchmarks.ray_throughput import (
    cpu_ms_per_request,
    cpu_table,
    gateway_home_share,
    gateway_placements,
    home_share,
    paired_ratios,
    per_replica,
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


METRICS = """# HELP fedrouter_backend_requests_total Requests sent to each vLLM replica
# TYPE fedrouter_backend_requests_total counter
fedrouter_backend_requests_total{backend="0",placement="home"} 12.0
fedrouter_backend_requests_total{backend="1",placement="home"} 5.0
fedrouter_backend_requests_total{backend="1",placement="spilled"} 3.0
fedrouter_backend_requests_total{backend="0",placement="least-loaded"} 4.0
fedrouter_backend_requests_created{backend="0",placement="home"} 1.7e+09
"""


def test_gateway_placements_sum_over_replicas_and_skip_other_series(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(httpx, "get", lambda url, timeout: httpx.Response(200, text=METRICS))
    assert gateway_placements("http://gw") == Counter({"home": 17, "spilled": 3, "least-loaded": 4})


def test_gateway_home_share_is_home_over_adapter_placements_in_the_window():
    before = Counter({"home": 10, "spilled": 1, "least-loaded": 5})
    after = Counter({"home": 28, "spilled": 3, "least-loaded": 50})  # base-model requests do not count
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
