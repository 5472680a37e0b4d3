"""What each strategy decides on the server: the clusters, and which client trains which.

Every strategy runs in the same harness (server_app.py). After the "query" round the server
knows each client's local centroids and counts, and builds a `Plan`: the K global clusters
(centroids for routing, adapter names) and, per client, the global cluster of each of its
local clusters. Training then averages LoRA tensors within each global cluster.

| strategy  | clients cluster by | global clusters                          | release adapters       |
|-----------|--------------------|------------------------------------------|------------------------|
| fedrouter | local k-means      | weighted k-means over local centroids    | one per task cluster   |
| oracle    | true task labels   | one per task                             | one per task           |
| fedavg    | one cluster        | one                                      | one shared             |
| local     | one cluster        | one per client, never shared             | one per client         |
| clustered | one cluster        | clients grouped by LoRA updates (round 1)| one per client group   |
| floral    | one cluster        | K shared adaptors, mixture per client    | one mixture per client |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrouter.router.vectors import centroid, nearest_ids
from fedrouter.training.clustering import cluster_by_weights, global_clusters


@dataclass
class LocalClusters:
    """What a client reported in the query round."""

    centroids: np.ndarray  # [k, dim]
    counts: np.ndarray  # [k]
    names: list[str]  # local cluster names (task names for oracle)


@dataclass
class Plan:
    train_mode: str  # "lora" or "floral"
    centroids: np.ndarray  # [K, dim] routing centroids of the release
    names: list[str]  # adapter name of each global cluster
    assign: dict[int, dict[int, int]]  # partition -> {local cluster -> global cluster}

    def sizes(self, local: dict[int, LocalClusters]) -> list[int]:
        sizes = [0] * len(self.names)
        for pid, mapping in self.assign.items():
            for l, g in mapping.items():
                sizes[g] += int(local[pid].counts[l])
        return sizes


def query_mode(strategy: str) -> str:
    return {"fedrouter": "kmeans", "oracle": "task"}.get(strategy, "one")


def _weighted_mean(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return centroid(np.stack(vectors), weights)


def make_plan(
    strategy: str,
    local: dict[int, LocalClusters],
    k_global: int,
    seed: int,
    fixed_centroids: np.ndarray | None = None,
    fixed_names: list[str] | None = None,
) -> Plan:
    """`fixed_centroids`: resuming from a release; clients join its clusters instead of new ones."""
    pids = sorted(local)
    if fixed_centroids is not None:
        assign = {p: {l: int(g) for l, g in enumerate(nearest_ids(local[p].centroids, fixed_centroids))} for p in pids}
        mode = "floral" if strategy == "floral" else "lora"
        return Plan(mode, fixed_centroids, list(fixed_names or []), assign)
    if strategy == "fedrouter":
        centroids, labels = global_clusters(
            [local[p].centroids for p in pids], [local[p].counts for p in pids], k_global, seed
        )
        assign = {p: {l: int(g) for l, g in enumerate(lab)} for p, lab in zip(pids, labels)}
        return Plan("lora", centroids, [f"cluster{g}" for g in range(len(centroids))], assign)
    if strategy == "oracle":
        tasks = sorted({n for p in pids for n in local[p].names})
        assign = {p: {l: tasks.index(n) for l, n in enumerate(local[p].names)} for p in pids}
        centroids = []
        for t in tasks:
            parts = [
                (local[p].centroids[l], local[p].counts[l])
                for p in pids
                for l, n in enumerate(local[p].names)
                if n == t
            ]
            centroids.append(_weighted_mean([c for c, _ in parts], [n for _, n in parts]))
        return Plan("lora", np.stack(centroids), tasks, assign)
    if strategy in ("fedavg", "floral"):
        centroid = _weighted_mean([local[p].centroids[0] for p in pids], [local[p].counts[0] for p in pids])
        # FLoRAL trains one shared rank-K·r LoRA; its release gets one mixture per client (export).
        return Plan(
            "floral" if strategy == "floral" else "lora", centroid[None, :], ["shared"], {p: {0: 0} for p in pids}
        )
    if strategy in ("local", "clustered"):  # clustered starts local, regroups after round 1
        centroids = np.stack([local[p].centroids[0] for p in pids])
        return Plan("lora", centroids, [f"client{p}" for p in pids], {p: {0: i} for i, p in enumerate(pids)})
    raise ValueError(f"unknown strategy {strategy!r}")


def regroup_clients(
    plan: Plan, local: dict[int, LocalClusters], updates: dict[int, np.ndarray], k_global: int, seed: int
) -> tuple[Plan, dict[int, list[int]]]:
    """Clustered FL: after a local round, group clients by their flattened LoRA updates.

    Returns the new plan and, per group, the old (per-client) clusters whose adapters start it."""
    pids = sorted(updates)
    labels = cluster_by_weights([updates[p] for p in pids], k_global, seed)
    groups = sorted(set(labels.tolist()))
    members = {g: [p for p, lab in zip(pids, labels) if lab == g] for g in groups}
    centroids = np.stack(
        [
            _weighted_mean([local[p].centroids[0] for p in members[g]], [local[p].counts[0] for p in members[g]])
            for g in groups
        ]
    )
    assign = {p: {0: groups.index(int(lab))} for p, lab in zip(pids, labels)}
    sources = {groups.index(g): [plan.assign[p][0] for p in members[g]] for g in groups}
    return Plan("lora", centroids, [f"group{i}" for i in range(len(groups))], assign), sources
