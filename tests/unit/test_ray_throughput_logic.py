"""benchmarks/ray_throughput.py's arithmetic: home-hit share from per-replica counters, paired ratios."""

from benchmarks.ray_throughput import home_share, paired_ratios, per_replica


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
