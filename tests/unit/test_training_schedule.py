"""Which cluster each client trains in each round, its steps, and the learning rate per round."""

import math

import pytest

from fedrouter.training.config import TrainConfig
from fedrouter.training.schedule import Unit, cosine_lr, round_lr, round_units


def test_round_robin_is_the_default_and_trains_one_local_cluster_per_round():
    cfg = TrainConfig(out="x", local_steps=8)
    assert cfg.schedule == "round-robin"  # the reference's Flower launcher (server.py:98, client.py:146-152)
    mapping, sizes = {0: 3, 1: 0, 2: 3}, {0: 30, 1: 10, 2: 5}
    # local cluster `round % 3` (server_round % n_clusters), local_steps steps on its global cluster
    assert [round_units(cfg.schedule, rnd, 8, mapping, sizes) for rnd in (1, 2, 3, 4)] == [
        [Unit(0, (1,), 8)],
        [Unit(3, (2,), 8)],
        [Unit(3, (0,), 8)],
        [Unit(0, (1,), 8)],
    ]


def test_round_robin_spends_a_one_adapter_budget_whatever_the_number_of_clusters():
    for k in (1, 2, 4):
        mapping, sizes = {l: l for l in range(k)}, {l: 10 for l in range(k)}
        for rnd in range(1, 6):
            units = round_units("round-robin", rnd, 6, mapping, sizes)
            assert sum(u.steps for u in units) == 6 and len(units) == 1


def test_full_and_shared_train_every_global_cluster():
    mapping, sizes = {0: 0, 1: 3, 2: 3}, {0: 30, 1: 6, 2: 4}
    assert round_units("full", 1, 8, mapping, sizes) == [Unit(0, (0,), 8), Unit(3, (1, 2), 8)]
    assert round_units("shared", 1, 8, mapping, sizes) == [Unit(0, (0,), 6), Unit(3, (1, 2), 2)]
    assert round_units("shared", 1, 8, {0: 0, 1: 1}, {0: 99, 1: 1}) == [Unit(0, (0,), 8), Unit(1, (1,), 1)]


def test_empty_clusters_train_nothing():
    assert round_units("round-robin", 1, 8, {0: 0, 1: 1}, {0: 5, 1: 0}) == []  # round 1: local cluster 1
    assert round_units("full", 1, 8, {0: 0, 1: 1}, {0: 5, 1: 0}) == [Unit(0, (0,), 8)]


def test_cosine_learning_rate_per_round():
    assert cosine_lr(1, 4, 1e-3) == pytest.approx(1e-3)
    # the reference's formula, rounds counted from 0: min + (lr - min)(1 + cos(pi r / R)) / 2
    assert cosine_lr(3, 4, 1e-3) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 2 / 4)))
    assert cosine_lr(2, 4, 1e-3) > cosine_lr(3, 4, 1e-3) > cosine_lr(4, 4, 1e-3) > 1e-5
    assert round_lr("constant", 4, 4, 1e-3) == 1e-3 and round_lr("cosine", 4, 4, 1e-3) < 1e-3


def test_unknown_schedules_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(out="x", schedule="half")
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(out="x", lr_schedule="linear")
