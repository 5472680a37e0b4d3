"""The Flower ServerApp: one harness for every strategy, ending in a release.

1. query: every client reports its local centroids and counts (never its data);
2. plan: the strategy turns them into global clusters and a cluster per local cluster;
3. rounds: each client trains the adapters of its clusters; the strategy aggregates (cluster-wise
   FedAvg; clustered FL regroups clients after its warm-up; FLoRAL weights by mixtures);
4. export: adapters + centroids + manifest -> runs/<run>/releases/v<N>, `latest` updated.

What differs between strategies is in the strategy objects (training/strategies), never here.

`flwr run .` reads the settings from pyproject's [tool.flwr.app.config]; `fedrouter train` passes
them directly (`server_app_for`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrouter.training.config import TrainConfig
from fedrouter.training.strategies import LocalClusters, Strategy, Update, get_strategy

Report = Callable[[str, dict], None]  # (event, data): progress display hook


def _ask(grid: Grid, nodes: dict[int, int], kind: str, contents: dict[int, RecordDict]) -> dict[int, Message]:
    """Send one message per partition, wait for all replies; a client's error stops the run."""
    messages = [Message(content=contents[pid], dst_node_id=nodes[pid], message_type=kind) for pid in contents]
    replies = list(grid.send_and_receive(messages))
    out = {}
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"a client failed in {kind}: {reply.error.reason}")
        out[int(reply.content["info"]["partition"])] = reply
    missing = set(contents) - set(out)
    if missing:
        raise RuntimeError(f"no {kind} reply from partitions {sorted(missing)}")
    return out


def _wait_for_nodes(grid: Grid, n: int, timeout_s: float = 300.0) -> list[int]:
    """The clients' node ids once `n` have connected. Polled after 0.05 s, then doubling up to 1 s:
    under the simulation engine they are there well within a second of the ServerApp's start (a
    first wait of a whole second cost a run up to a second); under the deployment engine they may
    take minutes."""
    deadline = time.monotonic() + timeout_s
    poll_s = 0.05
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {n} clients connected after {timeout_s:.0f} s")
        time.sleep(poll_s)
        poll_s = min(2 * poll_s, 1.0)


_fresh_lock = threading.Lock()  # one caller makes a fresh LoRA at a time; the next finds it cached


def _initial_lora(cfg: TrainConfig, base: str, rank_factor: int) -> dict[str, torch.Tensor]:
    r = cfg.lora_r * rank_factor
    with _fresh_lock:
        return _fresh_lora(base, r, cfg.lora_alpha * rank_factor, cfg.lora_targets, cfg.seed)


@lru_cache(maxsize=4)
def _fresh_lora(base: str, r: int, alpha: int, targets: str, seed: int) -> dict[str, torch.Tensor]:
    """A fresh LoRA's tensors; cached: a process that runs many federations (the benchmark) loads
    the base model for this once per setting instead of once per run. Callers never modify them."""
    from fedrouter.training.model import load_base, lora_state, with_lora

    return lora_state(with_lora(load_base(base), r, alpha, targets.split(","), seed))


def prepare(cfg: TrainConfig) -> None:
    """Make ahead, for this process, what `run_federation` would make after the clients' query: the
    fresh LoRA every cluster starts from (a base-model load). It is cached, so the federation then
    finds it ready, or waits for it if it is still being made (a failure here is met again there,
    and raised by the federation); `fedrouter train` calls this in a thread right after importing
    the apps' modules, while Ray's head starts, instead of while the clients embed."""
    if not cfg.resume:
        _initial_lora(cfg, cfg.base_model, get_strategy(cfg.strategy).rank_factor(cfg))


def run_federation(grid: Grid, cfg: TrainConfig, report: Report = lambda e, d: None):
    """The whole run; returns the written Release."""
    from fedrouter.training.base_model import prepare_base_model

    base = cfg.base_model or str(prepare_base_model())
    cfg.base_model = base  # clients load the same folder
    started = time.monotonic()
    node_ids = _wait_for_nodes(grid, cfg.num_clients)

    # 1. query: we learn which node holds which partition from the replies
    strategy = get_strategy(cfg.strategy)
    factor = strategy.rank_factor(cfg)
    resume = _load_resume(cfg)
    config = ConfigRecord(cfg.to_record())
    probe = {
        i: RecordDict({"config": config, "plan": ConfigRecord({"mode": strategy.query_mode})})
        for i in range(len(node_ids))
    }
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the fresh LoRA every cluster starts from (a base-model load, seconds) while the clients embed
        # (under `fedrouter train`, `prepare` started it while Ray's head started: found cached, or
        # waited for); it seeds torch's global RNG, which nothing else in this process draws from
        init = pool.submit(_initial_lora, cfg, base, factor) if resume is None else None
        by_index = _ask(grid, dict(enumerate(node_ids)), "query", probe)
    nodes = {pid: reply.metadata.src_node_id for pid, reply in by_index.items()}
    local = {
        pid: LocalClusters(
            r.content["local"]["centroids"].numpy(),
            r.content["local"]["counts"].numpy(),
            list(r.content["info"]["names"]),
        )
        for pid, r in by_index.items()
    }
    report("query", {"clients": len(local), "local_clusters": sum(len(l.names) for l in local.values())})

    # 2. plan, and the adapters every cluster starts from
    if resume is not None:
        plan = strategy.resume_plan(local, resume.centroids, resume.names)
        adapters = dict(enumerate(resume.states))
    else:
        plan = strategy.plan(local, cfg)
        fresh = init.result()
        adapters = {g: fresh for g in range(len(plan.names))}
    report("plan", {"clusters": len(plan.names), "assign": plan.assign})

    # 3. rounds
    history = []
    updates: list[Update] = []
    for rnd in range(1, cfg.rounds + 1):
        t0 = time.monotonic()
        contents = {}
        for pid, mapping in plan.assign.items():
            record = {
                "config": config,
                "plan": ConfigRecord(
                    {
                        "mode": plan.train_mode,
                        "round": rnd,
                        "rank_factor": factor,
                        "local_ids": list(mapping),
                        "global_ids": list(mapping.values()),
                    }
                ),
            }
            for g in set(mapping.values()):
                record[f"lora/{g}"] = ArrayRecord(adapters[g])
            contents[pid] = RecordDict(record)
        replies = _ask(grid, nodes, "train", contents)
        updates, losses, steps, samples = [], [], {}, {}
        for pid, reply in sorted(replies.items()):
            m = reply.content["metrics"]
            steps[str(pid)], samples[str(pid)] = int(m["counted/steps"]), int(m["counted/samples"])
            mixture = reply.content["mixture"]["logits"].numpy() if "mixture" in reply.content else None
            for key in reply.content.array_records:
                if key.startswith("lora/"):
                    g = int(key.split("/")[1])
                    state = reply.content[key].to_torch_state_dict()
                    updates.append(Update(pid, g, state, int(m[f"n/{g}"]), mixture))
                    losses.append(float(m[f"loss/{g}"]))
        plan, adapters = strategy.aggregate(rnd, plan, adapters, updates, local, cfg)
        history.append(
            {
                "round": rnd,
                "loss": float(np.mean(losses)) if losses else None,
                "seconds": time.monotonic() - t0,
                "clusters": len(plan.names),
                "steps": steps,  # optimizer steps each client ran this round, counted by the client
                "samples": samples,  # samples in those steps
            }
        )
        report("round", history[-1])
        if cfg.release_every_round and rnd < cfg.rounds:  # per-round curves: a release after every round
            _write(cfg, strategy, plan, local, adapters, updates, base, history, time.monotonic() - started)

    # 4. release
    release = _write(cfg, strategy, plan, local, adapters, updates, base, history, time.monotonic() - started)
    report("release", {"path": str(release.path), "id": release.id})
    return release


def _write(cfg: TrainConfig, strategy: Strategy, plan, local, adapters, updates, base, history, seconds):
    from fedrouter.router.embed import embedder_info
    from fedrouter.training.export import export_release

    parts = strategy.export(plan, local, adapters, updates, cfg)
    training = {
        "strategy": cfg.strategy,
        "rounds": len(history),
        "scenario": cfg.scenario,
        "tasks": cfg.task_list,
        "local_steps": cfg.local_steps,
        "schedule": cfg.schedule,
        "num_clients": cfg.num_clients,
        "seed": cfg.seed,
        "seconds": round(seconds, 1),
        "history": list(history),
        "resumed_from": cfg.resume or None,
        "config": cfg.to_record(),
        **parts.training,
    }
    # the embedder the clients embedded with, named as it records itself; the server never loads it
    embedder = embedder_info(cfg.embedder_kind, cfg.embedder, parts.centroids.shape[1])
    return export_release(cfg, embedder, base, parts, training)


class _Resume:
    def __init__(self, centroids, names, states):
        self.centroids, self.names, self.states = centroids, names, states


def _load_resume(cfg: TrainConfig) -> _Resume | None:
    if not cfg.resume:
        return None
    from safetensors.torch import load_file

    from fedrouter.router.release import ADAPTER_WEIGHTS, load_release

    rel = load_release(cfg.resume)
    clusters = sorted(rel.manifest.clusters, key=lambda c: c.id)
    states = [load_file(str(rel.path / c.path / ADAPTER_WEIGHTS)) for c in clusters]
    return _Resume(rel.centroids, [c.adapter for c in clusters], states)


def server_app_for(cfg: TrainConfig, report: Report = lambda e, d: None) -> ServerApp:
    """A ServerApp with settings given in code (fedrouter train) instead of run_config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, cfg, report)

    return app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = TrainConfig.from_record(dict(context.run_config))
    run_federation(grid, cfg, lambda e, d: print(f"[fedrouter] {e}: {d}", flush=True))
