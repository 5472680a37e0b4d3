"""Partitions of the multitask data into clients: the paper's scenarios, or the user's own files.

- `single`: one task per client.
- `dual`: two tasks per client (the paper's intra-client interference); each task at two clients.
- `iid`: every client has every task.
- `generalization`: clients train as in `dual`, and each is evaluated on the federation's tasks
  it never trained on; `held_out` tasks, which nobody trains on, are evaluated for everyone.

A sample is a dict with `prompt`, `response` and `task` (the task is used only for evaluation).
Bring your own data: a folder with one JSONL file per client (sorted by name), every 10th row
of a file kept aside for evaluation; or a folder of `client<i>/train.jsonl` + `test.jsonl`, as
`fedrouter data export` writes it (`export_scenario`), used as given.

Train and test prompts never overlap in the generated scenarios: tasks draw them from disjoint
entity or item sets (training/data/tasks.py).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fedrouter.router.build import read_jsonl
from fedrouter.training.data.corpora import corpus_tasks
from fedrouter.training.data.tasks import SYNTHETIC, Task

Sample = dict[str, str]
SCENARIOS = ("single", "dual", "iid", "generalization")


def all_tasks() -> dict[str, Task]:
    return {**SYNTHETIC, **corpus_tasks()}


def tasks_named(names: Iterable[str]) -> dict[str, Task]:
    """The known tasks among `names` (reading only the sources they come from)."""
    names = set(names)
    return {n: t for n, t in {**SYNTHETIC, **corpus_tasks(names)}.items() if n in names}


def get_tasks(names: list[str]) -> list[Task]:
    known = tasks_named(names)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown tasks {missing}; known: {', '.join(sorted(all_tasks()))}")
    return [known[n] for n in names]


@dataclass
class ClientData:
    train: list[Sample]
    test: list[Sample]  # what this client is evaluated on
    tasks: list[str] = field(default_factory=list)  # tasks it trains on


@dataclass
class Scenario:
    name: str
    clients: list[ClientData]
    held_out: list[Sample]  # tasks nobody trained on (generalization)

    def metric_of(self) -> dict[str, str]:
        """task -> "exact" | "rouge1"."""
        tasks = {s["task"] for c in self.clients for s in c.train + c.test} | {s["task"] for s in self.held_out}
        known = tasks_named(tasks)
        return {t: known[t].metric if t in known else "exact" for t in tasks}


def _samples(task: Task, n: int, rng: random.Random, split: str) -> list[Sample]:
    out = []
    for _ in range(n):
        prompt, response = task.sample(rng, split)
        out.append({"prompt": prompt, "response": response, "task": task.name})
    return out


def client_tasks(scenario: str, tasks: list[str], num_clients: int) -> list[list[str]]:
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r} is not one of {SCENARIOS}")
    t = len(tasks)
    if scenario == "single":
        return [[tasks[i % t]] for i in range(num_clients)]
    if scenario == "iid":
        return [list(tasks) for _ in range(num_clients)]
    if t < 2:
        raise ValueError(f"scenario {scenario!r} needs at least 2 tasks")
    # dual / generalization: client i holds tasks i and i+1 (mod T) -> every task at two clients
    return [[tasks[i % t], tasks[(i + 1) % t]] for i in range(num_clients)]


def make_scenario(
    scenario: str,
    tasks: list[str],
    num_clients: int,
    train_per_task: int,
    test_per_task: int,
    seed: int,
    held_out: list[str] = (),
) -> Scenario:
    """Deterministic for a seed: every client and the evaluator regenerate the same data."""
    assignment = client_tasks(scenario, tasks, num_clients)
    task_objs = {t.name: t for t in get_tasks(list(tasks) + list(held_out))}
    clients = []
    for i, names in enumerate(assignment):
        rng = random.Random(f"{seed}/client{i}")
        train = [s for n in names for s in _samples(task_objs[n], train_per_task, rng, "train")]
        rng.shuffle(train)
        test_rng = random.Random(f"{seed}/client{i}/test")
        test_names = [n for n in tasks if n not in names] if scenario == "generalization" else names
        test = [s for n in test_names for s in _samples(task_objs[n], test_per_task, test_rng, "test")]
        clients.append(ClientData(train=train, test=test, tasks=list(names)))
    rng = random.Random(f"{seed}/held_out")
    held = [s for n in held_out for s in _samples(task_objs[n], test_per_task, rng, "test")]
    return Scenario(scenario, clients, held)


def load_client_file(path: str | Path) -> ClientData:
    """One client's JSONL (`prompt`, `response`, optional `task`); every 10th row is for evaluation."""
    rows = read_jsonl(path, required=("prompt", "response"))
    rows = [
        {"prompt": r["prompt"], "response": r["response"], "task": str(r.get("task", Path(path).stem))} for r in rows
    ]
    train = [r for i, r in enumerate(rows) if i % 10 != 9]
    return ClientData(train=train, test=rows[9::10], tasks=sorted({r["task"] for r in train}))


def _rows(path: Path) -> list[Sample]:
    rows = read_jsonl(path, required=("prompt", "response"))
    return [
        {"prompt": r["prompt"], "response": r["response"], "task": str(r.get("task", path.parent.name))} for r in rows
    ]


def load_client_files(folder: str | Path) -> Scenario:
    """`client*/train.jsonl` (+ `test.jsonl`) folders if there are any, else one JSONL file per client."""
    dirs = sorted((d for d in Path(folder).iterdir() if (d / "train.jsonl").is_file()), key=_client_order)
    if dirs:
        clients = []
        for d in dirs:
            train = _rows(d / "train.jsonl")
            test = _rows(d / "test.jsonl") if (d / "test.jsonl").is_file() else []
            clients.append(ClientData(train=train, test=test, tasks=sorted({r["task"] for r in train})))
        return Scenario("files", clients, [])
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl client files in {folder}")
    return Scenario("files", [load_client_file(f) for f in files], [])


def carve_validation(scenario: Scenario, every: int = 5) -> Scenario:
    """The tuning split: each client's every `every`-th training sample becomes its test set, and
    the client trains on the rest minus any sample with a validation prompt (so validation prompts
    are never trained on). The real test sets and held-out tasks are left out: tuning never sees them."""
    clients = []
    for c in scenario.clients:
        val = c.train[every - 1 :: every]
        prompts = {s["prompt"] for s in val}
        train = [s for s in c.train if s["prompt"] not in prompts]
        clients.append(ClientData(train=train, test=val, tasks=list(c.tasks)))
    return Scenario(scenario.name, clients, [])


def scenario_from_config(cfg) -> Scenario:
    if cfg.data_dir:
        scenario = load_client_files(cfg.data_dir)
    else:
        scenario = make_scenario(
            cfg.scenario,
            cfg.task_list,
            cfg.num_clients,
            cfg.train_per_task,
            cfg.test_per_task,
            cfg.seed,
            cfg.held_out_list,
        )
    return carve_validation(scenario) if getattr(cfg, "validation", False) else scenario


def _client_order(d: Path) -> tuple[int, str]:
    digits = "".join(ch for ch in d.name if ch.isdigit())
    return (int(digits) if digits else 0, d.name)


def export_scenario(scenario: Scenario, out: str | Path) -> list[Path]:
    """Write `out/client<i>/train.jsonl` and `test.jsonl` (`prompt`, `response`, `task` per line).

    The test file holds what the client is evaluated on, plus the held-out tasks' samples (nobody
    trains on those). Returns the client folders."""
    folders = []
    for i, c in enumerate(scenario.clients):
        d = Path(out) / f"client{i}"
        d.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train", c.train), ("test", c.test + scenario.held_out)):
            with open(d / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({"prompt": r["prompt"], "response": r["response"], "task": r["task"]}) + "\n")
        folders.append(d)
    return folders
