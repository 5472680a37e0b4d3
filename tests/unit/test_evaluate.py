"""evaluate_release's routing modes on a hand-made release, with generation faked: each adapter
answers its own task right and everything else wrong, so every mode's score is known."""

import json

import numpy as np
import pytest

from fedrouter.router.build import build_release
from fedrouter.router.embed import make_embedder
from fedrouter.router.release import MANIFEST, load_release
from fedrouter.router.router import Router
from fedrouter.training import evaluate
from fedrouter.training.data.scenarios import ClientData, Scenario
from tests.conftest import fake_adapter

TASKS = {"add": "Add 12 and 30.", "capital": "What is the capital of Peru?"}


@pytest.fixture
def release(tmp_path):
    adapters, examples = {}, {}
    for name, prompt in TASKS.items():
        adapters[name] = fake_adapter(tmp_path / "src" / name, r=2)
        examples[name] = tmp_path / f"{name}.jsonl"
        examples[name].write_text(json.dumps({"prompt": prompt}) + "\n")
    rel = build_release(
        tmp_path / "rel", base_model="tiny", adapters=adapters, examples=examples, embedder=make_embedder("hash", "")
    )
    raw = json.loads((rel.path / MANIFEST).read_text())
    raw["client_clusters"] = {"0": {"0": 5}, "1": {"0": 3, "1": 4}}  # client 0 trained only "add"
    raw["training"] = {"strategy": "test", "client_adapters": {"0": "add", "1": "capital"}}
    raw.pop("digest")  # edited by hand: a manifest without its own digest gets one computed at load
    (rel.path / MANIFEST).write_text(json.dumps(raw))
    return load_release(rel.path)


def _fake_get(self, needs):
    """Adapter == task: the right answer; anything else (base included): a wrong one."""
    for who, idx in needs.items():
        for i in idx:
            task = "add" if self.prompts[i].startswith("Add") else "capital"
            self.cache[who][i] = {"add": "42", "capital": "Lima"}[task] if who == task else "no idea"


def test_modes_score_what_they_route_to(release, monkeypatch):
    monkeypatch.setattr(evaluate.Answers, "get", _fake_get)
    test = [
        {"prompt": "Add 12 and 30.", "response": "42", "task": "add"},
        {"prompt": "What is the capital of Peru?", "response": "Lima", "task": "capital"},
    ]
    scenario = Scenario("t", [ClientData([], list(test)), ClientData([], list(test))], held_out=[])
    result = evaluate.evaluate_release(release.path, scenario)
    assert result["modes"]["global"] == 1.0  # the centroids are the prompts themselves
    assert result["modes"]["oracle"] == 1.0 and result["oracle_adapters"] == {"add": "add", "capital": "capital"}
    # local: client 0 may only use "add" (right on add, wrong on capital); client 1 both
    assert result["per_client"]["local"] == {"0": 0.5, "1": 1.0}
    # client's own adapter: client 0 = add, client 1 = capital
    assert result["per_client"]["client"] == {"0": 0.5, "1": 0.5}
    assert result["modes"]["base"] == 0.0 and result["routing_agrees_with_oracle"] == 1.0


def test_router_routes_among_a_clients_clusters(release):
    router = Router(release, make_embedder("hash", ""))
    assert router.clusters_of("0") == [0] and router.clusters_of("1") == [0, 1] and router.clusters_of("9") is None
    prompt = TASKS["capital"]
    assert router.route(prompt).adapter == "capital"
    local = router.route(prompt, clusters=router.clusters_of("0"))
    assert local.adapter == "add" and local.cluster == 0 and local.margin == np.inf
    with pytest.raises(ValueError, match="not all in"):
        router.route(prompt, clusters=[5])


def test_oracle_picks_each_tasks_adapter_on_validation_samples_not_test_prompts(release, monkeypatch):
    monkeypatch.setattr(evaluate.Answers, "get", _fake_get)
    test = [
        {"prompt": "Add 12 and 30.", "response": "42", "task": "add"},
        {"prompt": "What is the capital of Peru?", "response": "Lima", "task": "capital"},
    ]
    scenario = Scenario("t", [ClientData([], list(test))], held_out=[])
    # a validation sample on which the wrong adapter ("capital" answers "no idea" to Add) scores best
    validation = [
        {"prompt": "Add 1 and 2.", "response": "no idea", "task": "add"},
        {"prompt": "What is the capital of Chile?", "response": "Lima", "task": "capital"},
    ]
    result = evaluate.evaluate_release(release.path, scenario, modes=("oracle",), validation=validation)
    assert result["oracle_adapters"] == {"add": "capital", "capital": "capital"}
    assert result["oracle_picked_on"] == "validation" and result["n"] == 2
    assert result["per_task"]["oracle"] == {"add": 0.0, "capital": 1.0}  # scored on the test prompts only
