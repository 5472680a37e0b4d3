"""Aggregation, clustering, FLoRAL export and data: expected values written out."""

import json
import re

import numpy as np
import pytest
import torch

from fedrouter.router.vectors import nearest_ids
from fedrouter.training.aggregate import aggregate_by_cluster, weighted_average
from fedrouter.training.clustering import global_clusters, local_clusters
from fedrouter.training.config import TrainConfig
from fedrouter.training.data.scenarios import (
    all_tasks,
    client_tasks,
    export_scenario,
    load_client_file,
    load_client_files,
    make_scenario,
)
from fedrouter.training.data.tasks import SYNTHETIC, held_out_part
from fedrouter.training.evaluate import score
from fedrouter.training.floral import attach_mixture, channel_weights, export_mixture
from fedrouter.training.strategies import REGISTRY, LocalClusters, Update, get_strategy, regroup_clients


def test_weighted_average_expected_values():
    w0, w1 = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 8.0])
    out = weighted_average([{"a": w0}, {"a": w1}], [1, 2])
    torch.testing.assert_close(out["a"], (w0 * 1 + w1 * 2) / 3)


def test_aggregate_by_cluster_averages_within_clusters_only():
    updates = [
        (0, {"a": torch.tensor([0.0])}, 10),
        (1, {"a": torch.tensor([100.0])}, 1),
        (0, {"a": torch.tensor([3.0])}, 20),
    ]
    out = aggregate_by_cluster(updates)
    assert out[0]["a"].item() == pytest.approx((0 * 10 + 3 * 20) / 30)
    assert out[1]["a"].item() == 100.0


def test_weighted_average_rejects_mismatched_keys():
    with pytest.raises(ValueError):
        weighted_average([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1, 1])


def test_local_kmeans_on_hand_made_points():
    pts = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [0, 1]], np.float32)
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    centroids, labels, counts = local_clusters(pts, 2, seed=0)
    assert labels[0] == labels[1] != labels[2] == labels[3] == labels[4]
    assert sorted(counts.tolist()) == [2, 3]
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, rtol=1e-5)


def test_global_clusters_weighted_and_mapped():
    x, y = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    local = [np.stack([x, y]), np.stack([y * 0.99 + x * 0.01]), np.stack([x * 0.98 + y * 0.02])]
    local = [l / np.linalg.norm(l, axis=1, keepdims=True) for l in local]
    counts = [np.array([10, 30]), np.array([5]), np.array([7])]
    centroids, assign = global_clusters(local, counts, k=2, seed=0)
    gx, gy = int(nearest_ids(x[None], centroids)[0]), int(nearest_ids(y[None], centroids)[0])
    assert gx != gy
    assert assign[0].tolist() == [gx, gy] and assign[1].tolist() == [gy] and assign[2].tolist() == [gx]
    # the x-cluster centroid is the count-weighted mean of the local centroids behind it
    expected = (local[0][0] * 10 + local[2][0] * 7) / np.linalg.norm(local[0][0] * 10 + local[2][0] * 7)
    np.testing.assert_allclose(centroids[gx], expected, rtol=1e-5)


def _local(names_per_client):
    rng = np.random.default_rng(0)
    out = {}
    for pid, names in enumerate(names_per_client):
        c = rng.normal(size=(len(names), 8)).astype(np.float32)
        out[pid] = LocalClusters(c / np.linalg.norm(c, axis=1, keepdims=True), np.arange(1, len(names) + 1), names)
    return out


def _plan(name, local, **cfg):
    return get_strategy(name).plan(local, TrainConfig(strategy=name, **cfg))


def test_plans_of_the_simple_strategies():
    local = _local([["add", "capital"], ["capital", "parity"]])
    oracle = _plan("oracle", local)
    assert oracle.names == ["add", "capital", "parity"] and oracle.assign == {0: {0: 0, 1: 1}, 1: {0: 1, 1: 2}}
    assert oracle.client_clusters(local) == {"0": {0: 1, 1: 2}, "1": {1: 1, 2: 2}}
    one = _local([["all"], ["all"], ["all"]])
    assert _plan("fedavg", one).assign == {0: {0: 0}, 1: {0: 0}, 2: {0: 0}}
    assert _plan("local", one).assign == {0: {0: 0}, 1: {0: 1}, 2: {0: 2}}
    assert _plan("clustered", one).names == ["shared"]  # the FedAvg warm-up
    assert _plan("floral", one).train_mode == "floral"
    cfg = TrainConfig(k_global=4, lora_r=2)
    assert [REGISTRY[n].rank_factor(cfg) for n in ("fedavg", "fedavg-matched", "floral", "fedrouter")] == [1, 4, 4, 1]


def test_every_strategy_is_one_registered_object():
    assert set(REGISTRY) == {"fedrouter", "oracle", "fedavg", "fedavg-matched", "local", "clustered", "floral"}
    with pytest.raises(ValueError, match="not one of"):
        get_strategy("magic")
    with pytest.raises(ValueError, match="resume"):
        TrainConfig(strategy="floral", resume="runs/x/releases/v1")


def test_resumed_plan_keeps_the_release_clusters():
    local = _local([["a", "b"]])
    fixed = local[0].centroids[::-1].copy()
    plan = get_strategy("fedrouter").resume_plan(local, fixed, ["x", "y"])
    assert plan.assign == {0: {0: 1, 1: 0}} and plan.names == ["x", "y"]


def _lora(b: list[float]) -> dict:
    return {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.tensor(b)[:, None]}


def test_regroup_clients_by_ward_clustering_of_their_updates():
    """Six clients whose B updates point three ways -> three groups of two, each the plain mean."""
    local = _local([["all"]] * 6)
    start = _lora([0.0, 0.0, 0.0])
    dirs = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    updates = [Update(p, 0, _lora([x * (1 + 0.1 * p) for x in dirs[p // 2]]), 10) for p in range(6)]
    plan, adapters = regroup_clients(local, updates, start, k=3)
    assert plan.assign == {0: {0: 0}, 1: {0: 0}, 2: {0: 1}, 3: {0: 1}, 4: {0: 2}, 5: {0: 2}}
    assert plan.names == ["group0", "group1", "group2"] and plan.centroids.shape == (3, 8)
    torch.testing.assert_close(adapters[1]["m.lora_B.weight"][:, 0], torch.tensor([0.0, (1.2 + 1.3) / 2, 0.0]))


def test_clustered_differs_from_local_when_clients_outnumber_groups():
    local = _local([["all"]] * 4)
    cfg = TrainConfig(strategy="clustered", k_clients=2, rounds=3, cluster_round=2)
    s = get_strategy("clustered")
    plan = s.plan(local, cfg)
    start = _lora([0.0, 0.0])
    updates = [Update(p, 0, _lora([1.0, 0.1 * p] if p < 2 else [0.1 * p, 1.0]), 5) for p in range(4)]
    same_plan, adapters = s.aggregate(1, plan, {0: start}, updates, local, cfg)  # round 1: FedAvg warm-up
    assert same_plan.names == ["shared"]
    torch.testing.assert_close(
        adapters[0]["m.lora_B.weight"][:, 0], torch.tensor([(1 + 1 + 0.2 + 0.3) / 4, (0 + 0.1 + 1 + 1) / 4])
    )
    grouped, adapters = s.aggregate(2, plan, {0: start}, updates, local, cfg)
    assert grouped.assign == {0: {0: 0}, 1: {0: 0}, 2: {0: 1}, 3: {0: 1}} and len(adapters) == 2
    assert len(get_strategy("local").plan(local, cfg).names) == 4


def test_floral_average_weights_each_adaptor_by_examples_times_mixture():
    from fedrouter.training.floral import floral_average

    r = 1
    a = [
        {"x.lora_A.weight": torch.tensor([[1.0], [2.0]]), "x.lora_B.weight": torch.tensor([[1.0, 2.0]])},
        {"x.lora_A.weight": torch.tensor([[3.0], [4.0]]), "x.lora_B.weight": torch.tensor([[3.0, 4.0]])},
    ]
    logits = [np.log(np.array([0.9, 0.1])), np.log(np.array([0.5, 0.5]))]
    out = floral_average(a, logits, [10, 30], r)
    w0 = np.array([10 * 0.9, 30 * 0.5]) / (10 * 0.9 + 30 * 0.5)  # adaptor 0
    w1 = np.array([10 * 0.1, 30 * 0.5]) / (10 * 0.1 + 30 * 0.5)  # adaptor 1
    expected_a = torch.tensor([[w0 @ [1.0, 3.0]], [w1 @ [2.0, 4.0]]], dtype=torch.float32)
    torch.testing.assert_close(out["x.lora_A.weight"], expected_a)
    torch.testing.assert_close(
        out["x.lora_B.weight"], torch.tensor([[w0 @ [1.0, 3.0], w1 @ [2.0, 4.0]]], dtype=torch.float32)
    )


def test_pyproject_flower_config_matches_train_config_defaults():
    from dataclasses import fields
    from pathlib import Path

    import tomllib

    flwr = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    defaults = {f.name.replace("_", "-"): f.default for f in fields(TrainConfig)}
    assert flwr == defaults


def test_floral_export_equals_the_mixture_forward():
    from peft import LoraConfig, get_peft_model

    from fedrouter.training.model import lora_state
    from tests.tiny import tiny_llama_in_memory

    base = tiny_llama_in_memory(seed=0)
    K, r = 3, 2
    model = get_peft_model(
        base, LoraConfig(r=K * r, lora_alpha=K * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    logits = torch.tensor([0.5, -1.0, 2.0])
    ids = torch.randint(0, 64, (2, 7))
    handles = attach_mixture(model, logits, r)
    with torch.no_grad():
        mixed = model(ids).logits
    for h in handles:
        h.remove()
    state = export_mixture(lora_state(model), logits.numpy(), r)
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)
    with torch.no_grad():
        exported = model(ids).logits
    torch.testing.assert_close(exported, mixed, rtol=1e-4, atol=1e-5)
    assert channel_weights(logits, r).shape == (K * r,)
    assert torch.softmax(logits, 0)[2] == pytest.approx(channel_weights(logits, r)[4].item())


def test_scenarios_partition_as_documented():
    assert client_tasks("single", ["a", "b"], 3) == [["a"], ["b"], ["a"]]
    assert client_tasks("dual", ["a", "b", "c", "d"], 4) == [["a", "b"], ["b", "c"], ["c", "d"], ["d", "a"]]
    assert client_tasks("iid", ["a", "b"], 2) == [["a", "b"], ["a", "b"]]
    s = make_scenario("generalization", ["add", "capital", "parity"], 3, 8, 4, seed=1, held_out=["max"])
    assert {x["task"] for x in s.clients[0].train} == {"add", "capital"}
    assert {x["task"] for x in s.clients[0].test} == {"parity"}  # never trained on
    assert {x["task"] for x in s.held_out} == {"max"}
    again = make_scenario("generalization", ["add", "capital", "parity"], 3, 8, 4, seed=1, held_out=["max"])
    assert again.clients[2].train == s.clients[2].train  # every client regenerates the same data


SCENARIO_TASKS = ["add", "sentiment", "capital", "parity", "max", "letters", "acronym", "first_letter"]


@pytest.mark.parametrize("scenario", ["single", "dual", "iid", "generalization"])
def test_no_test_prompt_is_a_training_prompt(scenario):
    """Across all clients: a prompt any client evaluates on is never one any client trained on."""
    tasks = sorted(all_tasks())  # synthetic and the installed corpus tasks
    for seed in (0, 1):
        s = make_scenario(scenario, tasks, len(tasks), 48, 24, seed=seed, held_out=[])
        train = {x["prompt"] for c in s.clients for x in c.train}
        test = {x["prompt"] for c in s.clients for x in c.test}
        assert test and train and not (train & test), sorted(train & test)[:5]


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_every_task_splits_train_and_test_and_answers_consistently(name):
    """Many draws per split: the prompt sets are disjoint, the answer is a function of the prompt,
    and a task has more than one answer (a constant answer would make exact match trivial)."""
    import random

    task, rng = SYNTHETIC[name], random.Random(7)
    answers: dict[str, str] = {}
    by_split = {}
    for split in ("train", "test"):
        drawn = [task.sample(rng, split) for _ in range(400)]
        for prompt, response in drawn:
            assert answers.setdefault(prompt, response) == response, prompt
        by_split[split] = {p for p, _ in drawn}
    assert not (by_split["train"] & by_split["test"])
    assert len(set(answers.values())) >= 2


def test_lookup_tasks_hold_out_their_entities():
    import random

    for name, entity in [("capital", r"capital of (.+)\?"), ("letters", r"word '(.+)'"), ("acronym", r"of '(.+)'")]:
        seen = {}
        for split in ("train", "test"):
            rng = random.Random(0)
            seen[split] = {re.search(entity, SYNTHETIC[name].sample(rng, split)[0]).group(1) for _ in range(300)}
        assert seen["test"] and not (seen["train"] & seen["test"]), name
    assert held_out_part(list(range(10)), "test") == [4, 9]


def test_independent_answers_of_the_arithmetic_tasks():
    import random

    rng = random.Random(3)
    for _ in range(50):
        p, r = SYNTHETIC["add"].sample(rng, "test")
        a, b = map(int, re.findall(r"\d+", p))
        assert int(r) == a + b
        p, r = SYNTHETIC["subtract"].sample(rng, "train")
        b, a = map(int, re.findall(r"\d+", p))
        assert int(r) == a - b
        p, r = SYNTHETIC["parity"].sample(rng, "train")
        assert r == ("even" if int(re.findall(r"\d+", p)[0]) % 2 == 0 else "odd")


def test_data_export_round_trip(tmp_path):
    s = make_scenario("dual", ["add", "capital", "parity"], 3, 8, 4, seed=2, held_out=["max"])
    export_scenario(s, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client0", "client1", "client2"]
    rows = [json.loads(line) for line in (tmp_path / "client1" / "test.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"prompt", "response", "task"} and len(rows) == 2 * 4 + 4
    back = load_client_files(tmp_path)
    assert back.clients[1].train == s.clients[1].train and back.clients[1].tasks == ["capital", "parity"]


def test_scores():
    assert score("Paris.", "paris", "exact") == 1.0 and score("Lyon", "Paris", "exact") == 0.0
    assert score("the cat sat", "the cat sat", "rouge1") == pytest.approx(1.0)
    assert 0 < score("the cat", "the cat sat", "rouge1") < 1


def test_user_client_file(tmp_path):
    f = tmp_path / "hospital.jsonl"
    f.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(20)))
    data = load_client_file(f)
    assert len(data.train) == 18 and [s["prompt"] for s in data.test] == ["q9", "q19"]
    assert data.tasks == ["hospital"]


def test_config_from_flower_run_config():
    cfg = TrainConfig.from_record({"strategy": "oracle", "local-steps": 3, "k-global": 2})
    assert cfg.strategy == "oracle" and cfg.local_steps == 3 and cfg.k_global == 2
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_record({"nope": 1})
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig(strategy="magic")
    assert TrainConfig.from_record({"strategy": "fedavg-matched"}).strategy == "fedavg-matched"
    # a release written with FLoRAL's absolute router lr reads back as the same ratio
    old = TrainConfig.upgrade({"strategy": "floral", "lr": 1e-3, "router_lr": 0.1})
    assert TrainConfig(**old).router_lr_scale == pytest.approx(100.0)


def test_the_dialogue_task_replies_in_conversations_it_never_trained_on():
    """chitchat-dataset: one example per conversation (its third turn after two), so a test
    conversation is never a training one; scored by ROUGE-1."""
    from fedrouter.training.data.corpora import corpus_tasks

    task = corpus_tasks()["dialogue"]
    train, test = task.items("train"), task.items("test")
    assert task.metric == "rouge1" and len(test) > 500 and len(train) > 3 * len(test)
    assert not {p for p, _ in train} & {p for p, _ in test}
    assert all(p.startswith("Reply in this chat.\nA: ") and p.endswith("\nA:") and r for p, r in train + test)


def test_a_corpus_source_is_read_only_for_the_tasks_asked_for(monkeypatch, capsys):
    from fedrouter.training.data import corpora
    from fedrouter.training.data.tasks import Task

    read = []

    def source(names, missing=False):
        def make():
            read.append(names[0])
            if missing:
                raise FileNotFoundError(f"this task needs the package {names[0]}-pkg")
            return {n: Task(n, "exact", pool=((f"{n}?", "yes"),)) for n in names}

        return names, make

    monkeypatch.setattr(corpora, "SOURCES", (source(("a1", "a2")), source(("b1",)), source(("c1",), missing=True)))
    corpora.clear_cache()
    try:
        assert sorted(corpora.corpus_tasks(["a2", "add"])) == ["a1", "a2"] and read == ["a1"]
        assert sorted(corpora.corpus_tasks(["a1"])) == ["a1", "a2"] and read == ["a1"]  # once per process
        assert sorted(corpora.corpus_tasks()) == ["a1", "a2", "b1"] and read == ["a1", "b1", "c1"]
        assert "skipping the tasks c1: this task needs the package c1-pkg" in capsys.readouterr().err
    finally:
        corpora.clear_cache()


def test_a_client_is_counted_by_its_base_models_weight_files(tmp_path):
    from fedrouter.training.run import available_memory_bytes, client_memory_bytes

    assert client_memory_bytes(str(tmp_path)) is None  # nothing to count
    (tmp_path / "model.safetensors").write_bytes(b"0" * 1000)
    (tmp_path / "tokenizer.json").write_bytes(b"0" * 10**6)
    assert client_memory_bytes(str(tmp_path)) == 4000 + 2**30
    assert available_memory_bytes() is None or available_memory_bytes() > 0


def test_ray_backend_runs_a_client_per_core_on_a_cpu_and_shares_a_gpu():
    from fedrouter.training.run import ray_backend

    cpu = ray_backend(4, cores=2, gpu=False)
    assert cpu["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.0} and "num_gpus" not in cpu["init_args"]
    assert cpu["init_args"]["num_cpus"] == 2  # two clients at once, one core (one torch thread) each
    assert ray_backend(2, cores=16, gpu=False)["client_resources"]["num_cpus"] == 8.0  # the cores split
    assert ray_backend(1, cores=2, gpu=False)["client_resources"]["num_cpus"] == 2.0  # one client: every core
    gib = 2**30  # no more clients at once than half the available memory holds, one model copy each
    fits = ray_backend(8, cores=8, gpu=False, client_bytes=3 * gib, available_bytes=13 * gib)
    assert fits["client_resources"]["num_cpus"] == 4.0  # two of 3 GiB in 6.5 GiB
    tight = ray_backend(8, cores=8, gpu=False, client_bytes=30 * gib, available_bytes=13 * gib)
    assert tight["client_resources"]["num_cpus"] == 8.0  # too little for two: one, on every core
    gpu = ray_backend(4, cores=16, gpu=True)
    assert gpu["client_resources"] == {"num_cpus": 4.0, "num_gpus": 0.25}  # the 4 clients at once
    assert gpu["init_args"]["num_gpus"] == 1
    assert ray_backend(32, cores=16, gpu=True)["client_resources"]["num_gpus"] == 1 / 8  # at most 8 at once
